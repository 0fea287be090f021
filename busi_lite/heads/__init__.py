"""Trainable heads on frozen MobileNetV2 features: the protocol and the registry.

A head is a small NumPy model, scikit-learn-like, registered under a ``kind``:

    @register_head
    class MyHead(Head):
        kind = "my"            # the name configs and saved models use
        consumes = "pooled"    # "pooled" X [N,1280] | "grid" X [N,49,1280] | your own
        ...

What the rest of busi-lite asks of a head class (``Head`` in base.py gives defaults):

- ``build(config, n_features, n_classes, seed)`` -> a fresh head from a training config
  (duck-typed: reads ``config.hidden``, and e.g. ``config.lam``);
- ``cache_inputs(cache, view, rows)`` -> X for training/evaluation, read from a feature cache;
- ``feature_inputs(cells)`` -> X from backbone features cells [N,49,1280] (serving);
- ``training_targets(cache, parts)`` -> extra keyword arguments for ``fit`` (e.g. the
  lesion targets of the multi-task head), ``parts`` = [(view, rows), ...];
- ``param_shapes(head_config)`` -> {name: shape}, to check saved arrays before allocating;
- ``from_params(head_config, params)`` -> a head with saved parameters (no random init).

and of a head object: ``fit``-able via ``base.fit``, ``predict(X) -> HeadOutput``,
``predict_proba(X)``, ``config()`` (JSON-able, includes ``kind``), ``params`` (dict of arrays).
Adding a head = one new module (``from .registry import register_head``; ``@register_head``)
+ its import line in this file.
"""

from __future__ import annotations

from busi_lite.heads.base import Adam, Head, HeadOutput, evaluate, fit

# the lesion-box head is a Model's optional second head, not a registered main head
from busi_lite.heads.box import BoxHead

# the built-in heads register themselves on import (a new head adds its import line here)
from busi_lite.heads.logreg import LogRegHead
from busi_lite.heads.mtl import MTLHead
from busi_lite.heads.plain import PlainHead
from busi_lite.heads.registry import HEADS, get_head, head_kinds, make_head, register_head

__all__ = ["HEADS", "Adam", "BoxHead", "Head", "HeadOutput", "LogRegHead", "MTLHead", "PlainHead", "evaluate", "fit", "get_head",
           "head_kinds", "make_head", "register_head"]
