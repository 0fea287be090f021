"""Parameters declared once (scikit-learn's ``_parameter_constraints``, as dataclass fields).

A parameter is a dataclass field made with :func:`param`: its default, its constraint, a
help line, and how it shows in a default model name. Everything else is generated from
that declaration: validation (:func:`validate`, the one validator, raising
``ConfigError(param=<field>)``), JSON (:class:`Params`), the CLI options (busi_lite.cli.options)
and default names (:func:`name_tokens`)::

    @dataclass(frozen=True)
    class MyParams(Params):
        alpha: float = param(0.5, Interval(float, 0, 1), "Mixing weight.", token="a{:g}")
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields

import numpy as np

from busi_lite.common.errors import ConfigError


@dataclass(frozen=True)
class Interval:
    """A real (``kind=float``) or whole (``kind=int``) number in [low, high]; ``open`` names the
    open ends ("low", "high", "both", "")."""
    kind: type
    low: float | None = None
    high: float | None = None
    open: str = ""

    def convert(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            return None
        if self.kind is int:
            if not isinstance(v, (int, np.integer)):
                return None
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                return None
        lo_open, hi_open = self.open in ("low", "both"), self.open in ("high", "both")
        if self.low is not None and (v < self.low or (lo_open and v == self.low)):
            return None
        if self.high is not None and (v > self.high or (hi_open and v == self.high)):
            return None
        return v

    def describe(self) -> str:
        what = "a whole number" if self.kind is int else "a finite number"
        lo = "" if self.low is None else f"{'>' if self.open in ('low', 'both') else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.open in ('high', 'both') else '<='} {self.high:g}"
        return " ".join(x for x in (what, lo, "and" if lo and hi else "", hi) if x)


@dataclass(frozen=True)
class Options:
    """One of ``values`` (strings)."""
    values: tuple

    def convert(self, v):
        return v if isinstance(v, str) and v in self.values else None

    def describe(self) -> str:
        return f"one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Boolean:
    def convert(self, v):
        return v if isinstance(v, bool) else None

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Names:
    """A tuple of distinct names from ``values`` (a list is accepted and stored as a tuple)."""
    values: tuple

    def convert(self, v):
        if isinstance(v, str) or not isinstance(v, (tuple, list)):
            return None
        if not all(isinstance(x, str) and x in self.values for x in v) or len(set(v)) != len(v):
            return None
        return tuple(v)

    def describe(self) -> str:
        return f"a list of distinct names from {', '.join(self.values)}"


@dataclass(frozen=True)
class Text:
    """A non-empty string."""
    def convert(self, v):
        return v if isinstance(v, str) and v else None

    def describe(self) -> str:
        return "a non-empty string"


def param(default, constraint, help: str, *, token: str | None = None, always: bool = False, flag: str | None = None,
          cli: bool = True):
    """A declared parameter: a dataclass field with its ``constraint`` (Interval, Options, Boolean,
    Names, Text), ``help`` (one line, for ``--help``), ``token`` (format of the value in a default model
    name, e.g. "lr{:g}"; None = left out of names; shown when not at the default, or ``always``), ``flag`` (CLI option name, default --<field>),
    ``cli`` (False: not a CLI option)."""
    meta = {"constraint": constraint, "help": help, "token": token, "always": always, "flag": flag, "cli": cli}
    if isinstance(default, (list, dict, set)):
        raise TypeError("a parameter default must be immutable (use a tuple)")
    return field(default=default, metadata={"param": meta})


def declared(cls_or_obj) -> list:
    """[(field, declaration dict)] of the declared parameters, in field order."""
    return [(f, f.metadata["param"]) for f in fields(cls_or_obj) if "param" in f.metadata]


def validate(obj) -> None:
    """THE validator: every declared field of ``obj`` against its constraint. Normalises in place
    (NumPy numbers -> int/float, lists -> tuples); a bad value raises ConfigError(param=<field>)."""
    for f, p in declared(obj):
        v = getattr(obj, f.name)
        c = p["constraint"].convert(v)
        if c is None:
            example = f.default if f.default is not MISSING else ""
            example = ",".join(example) if isinstance(example, tuple) else example
            raise ConfigError(f"{f.name}={v!r}: must be {p['constraint'].describe()}",
                              f"e.g. {f.name}={example}", param=f.name)
        object.__setattr__(obj, f.name, c)


def name_tokens(obj) -> str:
    """The declared ``token``s of ``obj``'s parameters joined by '-' (e.g. 'lr0.0001-b32-e50'): those
    declared ``always`` and those whose value is not the default (a bool shows its token when True)."""
    out = []
    for f, p in declared(obj):
        v = getattr(obj, f.name)
        if p["token"] is None or (not p["always"] and v == f.default):
            continue
        if isinstance(v, bool):
            if v:
                out.append(p["token"])
        else:
            out.append(p["token"].format(v))
    return "-".join(out)


@dataclass(frozen=True)
class Params:
    """Base of a head's parameter dataclass: validated at construction, JSON in and out."""

    def __post_init__(self):
        validate(self)

    def to_json(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_json(cls, d, where="params"):
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}", "check the file", where)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{where} has unknown fields {unknown} (known: {', '.join(sorted(names))})",
                              "remove them or upgrade busi-lite", param=unknown[0])
        return cls(**d)
