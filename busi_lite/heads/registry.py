"""The head registry: kind -> head class. ``register_head`` adds one, ``get_head`` finds one."""

from __future__ import annotations

from busi_lite.common.errors import ConfigError

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
    """The main head kinds (train/sweep/select offer them); ``HEADS`` also holds second heads (box)."""
    return tuple(sorted(k for k, cls in HEADS.items() if getattr(cls, "main", True)))


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
