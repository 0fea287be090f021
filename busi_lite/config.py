"""Training configuration: the single source of hyper-parameter defaults and their validation.

``Config`` is validated once, in ``__post_init__``; every bad value raises
``ConfigError(what, fix, param=<field name>)`` so the CLI can name its option.
Also here: the paper's grid of configs, the ``undersample=N`` parser and the
by-name config picker that ``sweep --only`` and ``select --only`` share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError
from .heads import get_head, head_kinds
from .paper import PAPER
from .views import VIEWS

BALANCES = ("none", "undersample", "weights")
DEFAULT_PER_CLASS = 150
DEFAULT_HEAD = "plain"  # the paper's head; its grid names carry no '+head' suffix


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    lr: float = 1e-4
    batch: int = 32
    epochs: int = 50
    masks: bool = False           # add mask-fused views of training images
    balance: str = "none"         # none | undersample | weights
    per_class: int = DEFAULT_PER_CLASS  # undersampling target per class
    head: str = DEFAULT_HEAD      # a registered head kind (busi_lite.heads.HEADS)
    views: tuple = VIEWS
    lam: float = 1.0              # weight of the segmentation loss (heads with one)
    hidden: int = 100

    def __post_init__(self):
        def bad(param, what, fix):
            raise ConfigError(f"{param}={getattr(self, param)!r}: {what}", fix, param=param)

        if not isinstance(self.name, str) or not self.name:
            bad("name", "the config name must be a non-empty string", "give a name such as 'model-7'")
        if not _is_number(self.lr) or self.lr <= 0:
            bad("lr", "the learning rate must be a finite number > 0", "e.g. lr=1e-4")
        for p in ("batch", "epochs", "per_class", "hidden"):
            if isinstance(getattr(self, p), np.integer):  # NumPy ints are fine; stored as int
                object.__setattr__(self, p, int(getattr(self, p)))
            if not _is_int(getattr(self, p)) or getattr(self, p) < 1:
                bad(p, "must be an integer >= 1", f"give {p} as a whole number >= 1")
        if not isinstance(self.masks, bool):
            bad("masks", "must be True or False", "give masks=True or masks=False")
        if self.balance not in BALANCES:
            bad("balance", "unknown balancing", f"choose one of {', '.join(BALANCES)}")
        get_head(self.head)  # ConfigError(param="head") listing the kinds
        if isinstance(self.views, str) or not isinstance(self.views, (tuple, list)):
            bad("views", "must be a tuple of view names", f"choose from {', '.join(VIEWS)}")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            bad("views", f"unknown views {unknown}", f"choose from {', '.join(VIEWS)}")
        object.__setattr__(self, "views", tuple(self.views))
        if not _is_number(self.lam) or self.lam < 0:
            bad("lam", "the segmentation loss weight must be a finite number >= 0", "e.g. lam=1.0")

    # read access by field name, for callers written against the old dict form
    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key) if key in self.__dataclass_fields__ else default

    def keys(self):
        return list(self.__dataclass_fields__)

    def to_json(self) -> dict:
        d = asdict(self)
        d["views"] = list(self.views)
        return d

    @classmethod
    def from_json(cls, d) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}", "check the file", "config")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"config has unknown fields {unknown}", "remove them or upgrade busi-lite", "config")
        d = dict(d)
        if "views" in d and isinstance(d["views"], list):
            d["views"] = tuple(d["views"])
        return cls(**d)

    @staticmethod
    def parse_balance(text: str) -> tuple[str, int]:
        """'none' | 'weights' | 'undersample' | 'undersample=N' -> (balance, per_class)."""
        kind, eq, n = str(text).strip().partition("=")
        if kind not in BALANCES or (eq and kind != "undersample"):
            raise ConfigError(f"balance {text!r} is not understood",
                              "use none, weights, undersample or undersample=N (N images a class)", param="balance")
        if not eq:
            return kind, DEFAULT_PER_CLASS
        try:
            per_class = int(n)
        except ValueError:
            per_class = 0
        if per_class < 1:
            raise ConfigError(f"balance {text!r}: N must be a whole number >= 1",
                              "e.g. undersample=120", param="balance")
        return kind, per_class


def paper_grid(head: str = DEFAULT_HEAD) -> list[Config]:
    """The paper's twelve configurations with head ``head`` (names get '+head' unless plain)."""
    get_head(head)
    suffix = "" if head == DEFAULT_HEAD else f"+{head}"
    return [Config(name=n + suffix, head=head, **kw) for n, (kw, _) in PAPER.items()]


def grid_for_heads(heads) -> list[Config]:
    """paper_grid of each head in ``heads`` (a list, or a comma-separated string)."""
    if isinstance(heads, str):
        heads = [h for h in heads.split(",") if h.strip()]
    if not heads:
        raise ConfigError("no head given", f"choose from {', '.join(head_kinds())}", param="heads")
    return [c for h in heads for c in paper_grid(h.strip())]


def pick_configs(configs, only) -> list[Config]:
    """Configs named in ``only`` (list or comma-separated string; empty -> all).

    A name matches a config's full name ('model-7+mtl') or its paper name ('model-7'
    matches 'model-7' and 'model-7+mtl'). An unknown name -> ConfigError(param="only")
    listing the valid names; the result is never empty."""
    configs = list(configs)
    if isinstance(only, str):
        only = [x.strip() for x in only.split(",") if x.strip()]
    only = list(only or [])
    if not only:
        if not configs:
            raise ConfigError("no configurations to run", "choose at least one head", param="only")
        return configs
    valid = sorted({c.name for c in configs} | {c.name.split("+")[0] for c in configs})
    unknown = [n for n in only if n not in valid]
    if unknown:
        raise ConfigError(f"unknown config name(s) {', '.join(unknown)}",
                          f"choose from {', '.join(valid)}", param="only")
    want = set(only)
    return [c for c in configs if c.name in want or c.name.split("+")[0] in want]
