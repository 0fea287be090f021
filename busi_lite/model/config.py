"""The training recipe: which head with which parameters, on which samples and features.

``Config`` holds what every head shares (masks, balance, views, preprocessing, flip) as declared
parameters (busi_lite.common.params) and ``params``: the head's OWN parameter dataclass
(``get_head(head).Params``: lr/batch/epochs/hidden for the Adam heads, C for logreg, ...).
Everything is validated by the one validator at construction, raising
``ConfigError(param=<field>)``. Grid configs carry the paper model they come from in ``base``
(names like 'model-7p+mtl+v2+flip' are made from fields, never parsed).

Also here: the paper's grid of configs, the ``undersample=N`` parser, the by-name config picker
that ``sweep --only`` and ``select --only`` share, and default model names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from busi_lite.common.errors import ConfigError
from busi_lite.common.paper import PAPER
from busi_lite.common.params import (
    Boolean,
    Interval,
    Names,
    Options,
    Params,
    Text,
    name_tokens,
    param,
    validate,
)
from busi_lite.features.preprocess import SHORT
from busi_lite.features.views import VIEWS
from busi_lite.heads import get_head, head_kinds

BALANCES = ("none", "undersample", "weights")
DEFAULT_PER_CLASS = 150
DEFAULT_HEAD = "plain"  # the paper's head; its grid names carry no '+head' suffix
DEFAULT_PREPROCESS = "v1"  # Teachable Machine's (the paper's); 'v2' = contrast-normalised (busi_lite.features.preprocess)


class HeadKind:
    """A registered main head kind (busi_lite.heads; looked up when checked, so later registrations count)."""

    def convert(self, v):
        try:
            return v if isinstance(v, str) and get_head(v) and v in head_kinds() else None
        except ConfigError:
            return None

    def describe(self) -> str:
        return f"one of {', '.join(head_kinds())}"

    @property
    def values(self) -> tuple:
        return head_kinds()


class PreprocessName(Options):
    """A preprocessing by short name ('v1') or full name (stored as the short name)."""

    def convert(self, v):
        full = {name: short for short, name in SHORT.items()}
        return v if v in SHORT else full.get(v) if isinstance(v, str) else None


@dataclass(frozen=True)
class Config:
    name: str = param("custom", Text(), "Model name.", cli=False)
    head: str = param(DEFAULT_HEAD, HeadKind(), "Head: plain (the paper's), mtl (adds a lesion map: a value per "
                      "cell of the backbone's grid), logreg (logistic regression).")
    params: Params | None = field(default=None)  # the head's parameters; None -> the head's defaults
    masks: bool = param(False, Boolean(), "Add mask-fused views of TRAINING images as extra samples.", token="masks")
    balance: str = param("none", Options(BALANCES), "none | undersample[=N] (N images a class) | weights.",
                         token="{}")
    per_class: int = param(DEFAULT_PER_CLASS, Interval(int, 1), "Undersampling target per class.", token="n{}",
                           cli=False)
    views: tuple = param(VIEWS, Names(VIEWS), "Mask-fused views used with --masks, comma-separated.")
    preprocess: str = param(DEFAULT_PREPROCESS, PreprocessName(tuple(SHORT)),
                            "Preprocessing of the features (the cache's): v1 Teachable Machine's, v2 contrast-normalised.",
                            token="{}")
    flip: bool = param(False, Boolean(), "Train on each image and its mirror; average both probabilities at "
                       "evaluation.", token="flip")
    base: str | None = field(default=None)  # the paper's model (common.paper.PAPER) a grid config comes from

    def __post_init__(self):
        validate(self)
        cls = get_head(self.head).Params
        p = cls() if self.params is None else self.params
        if type(p) is not cls:
            raise ConfigError(f"params {type(p).__name__} are not the {self.head} head's ({cls.__name__})",
                              f"give {cls.__name__}(...) or build the config with Config.build", param="head")
        object.__setattr__(self, "params", p)
        if self.base is not None and self.base not in PAPER:
            raise ConfigError(f"base={self.base!r}: not a paper model", f"choose from {', '.join(PAPER)}", param="base")

    @classmethod
    def build(cls, head: str = DEFAULT_HEAD, strict: bool = True, **kw) -> Config:
        """A Config from flat keywords: the recipe's fields, the rest the head's parameters
        (``Config.build(head="mtl", lr=3e-4, lam=0.5, masks=True)``). A keyword neither declares ->
        ConfigError(param=<it>) unless ``strict`` is False (then it is dropped: the paper grid's
        lr/batch/epochs for a head without them)."""
        recipe = {f.name for f in fields(cls)} - {"params", "head"}
        p_cls = get_head(head).Params
        knobs = {f.name for f in fields(p_cls)}
        unknown = sorted(set(kw) - recipe - knobs)
        if unknown and strict:
            raise ConfigError(f"the {head} head has no parameter {unknown[0]!r}",
                              f"its parameters: {', '.join(sorted(knobs)) or 'none'}", param=unknown[0])
        return cls(head=head, params=p_cls(**{k: v for k, v in kw.items() if k in knobs}),
                   **{k: v for k, v in kw.items() if k in recipe})

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["views"], d["params"] = list(self.views), self.params.to_json()
        if self.base is None:
            del d["base"]
        return d

    @classmethod
    def from_json(cls, d) -> Config:
        """This version's layout ({..., "params": {...}}), or the flat one written before per-head
        parameters (every head's knobs side by side; the ones the head does not use are dropped)."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}", "check the file", "config")
        if "params" not in d:
            return _from_flat(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config has unknown fields {unknown}", "remove them or upgrade busi-lite", "config")
        d = dict(d)
        head = d.get("head", DEFAULT_HEAD)
        d["params"] = get_head(head).Params.from_json(d["params"], f"config.params (of the {head} head)")
        if isinstance(d.get("views"), list):
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


_FLAT = {"name", "lr", "batch", "epochs", "masks", "balance", "per_class", "head", "views", "lam", "hidden",
         "preprocess", "flip", "C"}  # the layout before per-head parameters


def _from_flat(d: dict) -> Config:
    """A Config from the flat layout (model cards model_card/1, older sweep files)."""
    unknown = sorted(set(d) - _FLAT)
    if unknown:
        raise ConfigError(f"config has unknown fields {unknown}", "remove them or upgrade busi-lite", "config")
    d = dict(d)
    if isinstance(d.get("views"), list):
        d["views"] = tuple(d["views"])
    base = str(d.get("name", "")).split("+")[0]  # grid names were '<paper model>[+head][+v2][+flip]'
    return Config.build(strict=False, base=base if base in PAPER else None, **d)


def suffix(head: str = DEFAULT_HEAD, preprocess: str = DEFAULT_PREPROCESS, flip: bool = False) -> str:
    """Name suffix of a grid config: '+head' unless plain, '+v2' unless v1, '+flip' with flip."""
    return (("" if head == DEFAULT_HEAD else f"+{head}") + ("" if preprocess == DEFAULT_PREPROCESS else f"+{preprocess}")
            + ("+flip" if flip else ""))


def paper_grid(head: str = DEFAULT_HEAD, preprocess: str = DEFAULT_PREPROCESS, flip: bool = False) -> list[Config]:
    """The paper's twelve configurations with head ``head`` (names get '+head' unless plain,
    '+v2' for preprocessing v2 and '+flip' with flip averaging: see :func:`suffix`). A head without
    the paper's lr/batch/epochs (logreg) gets its own defaults for them; ``base`` names the paper model."""
    get_head(head)
    pp = Config(preprocess=preprocess).preprocess  # validated, short name
    s = suffix(head, pp, flip)
    return [Config.build(name=n + s, base=n, head=head, preprocess=pp, flip=flip, strict=False, **kw)
            for n, (kw, _) in PAPER.items()]


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

    A name matches a config's full name ('model-7+mtl') or its paper model (``base``: 'model-7'
    matches 'model-7' and 'model-7+mtl'). An unknown name -> ConfigError(param="only")
    listing the valid names; the result is never empty."""
    configs = list(configs)
    only = _names(only or [])
    if not only:
        if not configs:
            raise ConfigError("no configurations to run", "choose at least one head", param="only")
        return configs
    valid = sorted({c.name for c in configs} | {c.base for c in configs if c.base})
    unknown = [n for n in only if n not in valid]
    if unknown:
        raise ConfigError(f"unknown config name(s) {', '.join(unknown)}",
                          f"choose from {', '.join(valid)}", param="only")
    want = set(only)
    return [c for c in configs if c.name in want or c.base in want]


def flat_view(config: dict) -> dict:
    """A config as JSON (either layout) as one flat dict: the head's parameters beside the recipe's
    fields (for tables that show lr, batch, ... whatever the head)."""
    return {**(config.get("params") or {}), **{k: v for k, v in config.items() if k != "params"}}


def base_of(config: dict) -> str | None:
    """The paper model of a config as JSON (either layout): its ``base``; in the flat layout
    (before per-head parameters) read from a grid name."""
    if not isinstance(config, dict):
        return None
    try:
        return Config.from_json(config).base
    except ConfigError:
        return None


def default_name(config: Config, seed: int) -> str:
    """A model name from its recipe: the head, the name tokens of its parameters and of the recipe
    (declared ``token``s: lr/b/e always, the rest when not at their defaults), the seed."""
    parts = (config.head, name_tokens(config.params), name_tokens(config), f"s{seed}")
    return "-".join(t for t in parts if t)
