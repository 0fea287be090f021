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

from busi_lite.common.errors import ConfigError
from busi_lite.common.paper import PAPER
from busi_lite.features.preprocess import SHORT, Preprocessing
from busi_lite.features.views import VIEWS
from busi_lite.heads import get_head, head_kinds

BALANCES = ("none", "undersample", "weights")
DEFAULT_PER_CLASS = 150
DEFAULT_HEAD = "plain"  # the paper's head; its grid names carry no '+head' suffix
DEFAULT_PREPROCESS = "v1"  # Teachable Machine's (the paper's); 'v2' = contrast-normalised (busi_lite.features.preprocess)


_LATER_FIELDS = ("preprocess", "flip", "C")


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
    preprocess: str = DEFAULT_PREPROCESS  # 'v1' | 'v2': must be the feature cache's preprocessing
    flip: bool = False            # train on each training image and its mirror, average both at evaluation
    C: float = 0.01               # inverse L2 strength of the logreg head (scikit-learn's C; heads/logreg.py)

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
        if not isinstance(self.preprocess, str):
            bad("preprocess", "must be a preprocessing name", f"choose one of {', '.join(SHORT)}")
        name = Preprocessing.named(self.preprocess).name  # ConfigError(param="preprocess") when unknown
        object.__setattr__(self, "preprocess", next(k for k, v in SHORT.items() if v == name))
        if not isinstance(self.flip, bool):
            bad("flip", "must be True or False", "give flip=True or flip=False")
        if not _is_number(self.C) or self.C <= 0:
            bad("C", "the inverse regularisation strength must be a finite number > 0", "e.g. C=0.01")

    def to_json(self) -> dict:
        """Fields as JSON; preprocess, flip and C only when not at their defaults, so a config that
        leaves them at their defaults has the JSON (and the hash) of one that has no such fields."""
        d = asdict(self)
        d["views"] = list(self.views)
        for k in _LATER_FIELDS:
            if d[k] == self.__dataclass_fields__[k].default:
                del d[k]
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


def suffix(head: str = DEFAULT_HEAD, preprocess: str = DEFAULT_PREPROCESS, flip: bool = False) -> str:
    """Name suffix of a grid config: '+head' unless plain, '+v2' unless v1, '+flip' with flip."""
    return (("" if head == DEFAULT_HEAD else f"+{head}") + ("" if preprocess == DEFAULT_PREPROCESS else f"+{preprocess}")
            + ("+flip" if flip else ""))


def paper_grid(head: str = DEFAULT_HEAD, preprocess: str = DEFAULT_PREPROCESS, flip: bool = False) -> list[Config]:
    """The paper's twelve configurations with head ``head`` (names get '+head' unless plain,
    '+v2' for preprocessing v2 and '+flip' with flip averaging: see :func:`suffix`)."""
    get_head(head)
    pp = Config(preprocess=preprocess).preprocess  # validated, short name
    s = suffix(head, pp, flip)
    return [Config(name=n + s, head=head, preprocess=pp, flip=flip, **kw) for n, (kw, _) in PAPER.items()]


def _names(v) -> list:
    """A list of names, or a comma-separated string of them -> list (blanks dropped from a string)."""
    if isinstance(v, str):
        v = [h.strip() for h in v.split(",") if h.strip()]
    return list(v)


def grid_for_heads(heads, preprocess=(DEFAULT_PREPROCESS,), flips=(False,)) -> list[Config]:
    """paper_grid of each head in ``heads`` x preprocessing in ``preprocess`` x flip in ``flips``
    (lists, or comma-separated strings for heads/preprocess)."""
    heads, preprocess = _names(heads), _names(preprocess)
    if not heads:
        raise ConfigError("no head given", f"choose from {', '.join(head_kinds())}", param="heads")
    if not preprocess:
        raise ConfigError("no preprocessing given", f"choose from {', '.join(SHORT)}", param="preprocess")
    return [c for p in preprocess for f in flips for h in heads for c in paper_grid(h, p, bool(f))]


def pick_configs(configs, only) -> list[Config]:
    """Configs named in ``only`` (list or comma-separated string; empty -> all).

    A name matches a config's full name ('model-7+mtl') or its paper name ('model-7'
    matches 'model-7' and 'model-7+mtl'). An unknown name -> ConfigError(param="only")
    listing the valid names; the result is never empty."""
    configs = list(configs)
    only = _names(only or [])
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
