"""Trainable heads on frozen backbone features: the protocol and the registry.

A head is a small NumPy model, scikit-learn-like, registered under a ``kind``, with its training
parameters declared once (busi_lite.common.params):

    @dataclass(frozen=True)
    class MyParams(AdamParams):                 # lr, batch, epochs + yours
        width: int = param(64, Interval(int, 1), "Hidden units.", token="w{}")

    @register_head
    class MyHead(Head):
        kind = "my"            # the name configs and saved models use
        consumes = "pooled"    # "pooled" X [N,D] | "grid" X [N,G*G,D] | "pooled+box" X [N,2D]
        Params = MyParams
        ...

What the rest of busi-lite asks of a head class (``Head`` in base.py gives defaults):

- ``Params``: its parameter dataclass; the CLI options, validation, JSON and default names come
  from it; ``Params().fit_kwargs()`` are the keywords of ``fit`` (Adam's lr/batch_size/epochs);
- ``build(params, n_features, n_classes, seed)`` -> a fresh head;
- ``consumes`` and ``targets`` ({fit keyword: cache source}, e.g. mtl's {"seg_target": "grid"}):
  training maps them to cache reads (busi_lite.training.core.cache_inputs / training_targets);
  a head never reads the cache itself;
- ``feature_inputs(cells)`` -> X from backbone features cells [N,G*G,D] (serving);
- ``input_shape(n_features)``, ``param_shapes(head_config)`` (checked before allocating),
  ``from_params(head_config, params)`` (no random init), ``frozen_params`` (fitted statistics);
- ``main``: False for a Model's second head (the box head), which train/sweep/select never offer.

and of a head object: ``fit(X, y, *, seed, sample_weight, **targets, **fit_kwargs) -> history``,
``predict(X) -> HeadOutput``, ``predict_proba(X)``, ``loss_and_grads`` (where it has a backward pass),
``config()`` (JSON-able, includes ``kind``), ``params`` (dict of arrays). Every registered head passes
tests/test_head_conformance.py. Adding a head = one new module + its import line in this file.
"""

from __future__ import annotations

from busi_lite.heads.base import Head, HeadOutput, evaluate, fit

# the lesion-box head: registered, but a Model's optional second head (main = False)
from busi_lite.heads.box import BoxHead

# the built-in heads register themselves on import (a new head adds its import line here)
from busi_lite.heads.logreg import LogRegHead
from busi_lite.heads.mtl import MTLHead
from busi_lite.heads.optim import Adam
from busi_lite.heads.plain import PlainHead
from busi_lite.heads.registry import HEADS, get_head, head_kinds, make_head, register_head

__all__ = ["HEADS", "Adam", "BoxHead", "Head", "HeadOutput", "LogRegHead", "MTLHead", "PlainHead", "evaluate", "fit", "get_head",
           "head_kinds", "make_head", "register_head"]
