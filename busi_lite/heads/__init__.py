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
Adding a head = one new module + ``@register_head`` + an import line at the bottom of this file.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Adam, Head, HeadOutput, evaluate, fit  # noqa: F401

__all__ = ["HEADS", "Adam", "Head", "HeadOutput", "MTLHead", "PlainHead", "evaluate", "fit", "get_head",
           "head_kinds", "make_head", "register_head"]

HEADS: dict[str, type] = {}


def register_head(cls):
    """Class decorator: make ``cls`` available under ``cls.kind``."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} needs a class attribute kind = '<name>' to be registered")
    if kind in HEADS and HEADS[kind] is not cls:
        raise TypeError(f"head kind {kind!r} is already registered by {HEADS[kind].__name__}")
    HEADS[kind] = cls
    return cls


def head_kinds() -> tuple[str, ...]:
    return tuple(sorted(HEADS))


def get_head(kind) -> type:
    """The head class registered as ``kind``; unknown kind -> ConfigError(param="head")."""
    if kind not in HEADS:
        raise ConfigError(f"head {kind!r} is not a known head kind",
                          f"choose one of {', '.join(head_kinds())}", param="head")
    return HEADS[kind]


def make_head(config, params=None, seed=0):
    """Rebuild a head from ``head.config()`` (and optional saved params, checked for names and
    shapes BEFORE anything is allocated). Without params the head is freshly initialised from ``seed``."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind not in HEADS:
        raise ConfigError(f"config['kind'] must be one of {list(head_kinds())}, got {kind!r}",
                          "use a head kind this busi-lite knows", param="head")
    cls = HEADS[kind]
    if params is None:
        try:
            return cls(**cfg, seed=seed)
        except TypeError as e:
            raise ConfigError(f"bad config for {kind!r} head: {e}", "check the head config") from None
    return cls.from_params(dict(config), params)


# registration of the built-in heads (a new head adds its import here)
from .mtl import MTLHead  # noqa: E402,F401
from .plain import PlainHead  # noqa: E402,F401
