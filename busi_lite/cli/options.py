"""Click options generated from the declared parameters (busi_lite.common.params).

The recipe's fields (busi_lite.model.config.Config) and every registered head's ``Params``
become options of ``train`` and ``site-cv``: the declaration's constraint gives the click type,
its help the help line. A head parameter's option defaults to "the head's default" (shown per
head in ``--help``); giving one the chosen head does not declare is an error naming it.
``config_args`` turns a Config back into these options (for a report's "Reproduce").
"""

from __future__ import annotations

import click

from busi_lite.common.errors import BusiError
from busi_lite.common.params import Boolean, Interval, Names, Options, declared
from busi_lite.heads import HEADS, head_kinds
from busi_lite.model.config import Config, HeadKind


class BalanceType(click.ParamType):
    """--balance none | weights | undersample[=N] -> (balance, per_class), parsed by the library."""
    name = "none|weights|undersample[=N]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return Config.parse_balance(value)
        except BusiError as e:
            self.fail(str(e), param, ctx)


class CommaList(click.ParamType):
    """A comma-separated list; each item checked against ``choices`` (when given) or converted by ``item``."""

    def __init__(self, choices=None, item=None, name="LIST"):
        self.choices, self.item, self.name = choices, item, name

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [x.strip() for x in str(value).split(",") if x.strip()]
        choices = self.choices() if callable(self.choices) else self.choices
        out = []
        for x in items:
            if choices is not None and x not in choices:
                self.fail(f"{x!r} is not one of {', '.join(choices)}", param, ctx)
            if self.item is not None:
                try:
                    x = self.item(x)
                except (ValueError, click.BadParameter) as e:
                    self.fail(f"{x!r}: {e}", param, ctx)
            out.append(x)
        return out


def flag_of(name: str, decl: dict) -> str:
    return decl["flag"] or "--" + name.replace("_", "-")


def click_type(name: str, constraint):
    """The click type of a declared constraint (``balance`` keeps its 'undersample=N' form)."""
    if name == "balance":
        return BalanceType()
    if isinstance(constraint, HeadKind):
        return click.Choice(list(head_kinds()))
    if isinstance(constraint, Interval):
        rng = click.FloatRange if constraint.kind is float else click.IntRange
        return rng(min=constraint.low, max=constraint.high, min_open=constraint.open in ("low", "both"),
                   max_open=constraint.open in ("high", "both"))
    if isinstance(constraint, Names):
        return CommaList(list(constraint.values), name=name.upper())
    if isinstance(constraint, Options):
        return click.Choice(list(constraint.values))
    raise TypeError(f"no click type for parameter {name!r} ({type(constraint).__name__})")


def _option(name: str, decl: dict, default, show_default, help: str):
    flag = flag_of(name, decl)
    if isinstance(decl["constraint"], Boolean):
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=default, show_default=show_default, help=help)
    if isinstance(default, tuple):
        default = ",".join(default)
    return click.option(flag, name, type=click_type(name, decl["constraint"]), default=default,
                        show_default=show_default, help=help)


def params_options(params_cls):
    """Decorator: one option per declared parameter of ``params_cls`` (a head's Params), at its default
    (e.g. ``train-box``'s --C from the box head's BoxParams)."""
    def deco(f):
        for fd, decl in reversed(declared(params_cls)):
            f = _option(fd.name, decl, fd.default, True, decl["help"])(f)
        return f
    return deco


def head_parameters() -> dict:
    """{parameter name: (declaration, {head kind: default})} over the registered main heads."""
    out = {}
    for kind in head_kinds():
        for f, decl in declared(HEADS[kind].Params):
            out.setdefault(f.name, (decl, {}))[1][kind] = f.default
    return out


def config_options(f):
    """Decorator: the recipe's options, then one option per head parameter."""
    opts = []
    for fd, decl in declared(Config):
        if decl["cli"]:
            opts.append(_option(fd.name, decl, fd.default, True, decl["help"]))
    for name, (decl, defaults) in head_parameters().items():
        by_head = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in defaults.items())
        opts.append(_option(name, decl, None, False, f"{decl['help']} [heads: {by_head}]"))
    for o in reversed(opts):
        f = o(f)
    return f


def option_names() -> set:
    """The keyword names config_options adds to a command."""
    return {fd.name for fd, decl in declared(Config) if decl["cli"]} | set(head_parameters())


def make_config(name: str, values: dict) -> Config:
    """The command's option values -> a validated Config (``balance`` arrives as (kind, per_class))."""
    values = dict(values)
    values["balance"], values["per_class"] = values["balance"]
    given = {k: v for k, v in values.items() if k in head_parameters() and v is not None}
    recipe = {k: v for k, v in values.items() if k not in head_parameters()}
    recipe["views"] = tuple(recipe["views"])
    return Config.build(name=name, **recipe, **given)


def config_args(config: Config) -> tuple[list, list]:
    """(`train` options, fields train cannot set) that rebuild ``config``: --name, then every recipe
    field and head parameter differing from its default."""
    args, missing = ["--name", config.name], []
    for fd, decl in declared(Config):
        v = getattr(config, fd.name)
        if not decl["cli"] or v == fd.default:
            continue
        args += _args(flag_of(fd.name, decl), v, config)
    if config.per_class != Config.per_class and config.balance != "undersample":
        missing.append(f"per_class={config.per_class!r}")  # only --balance undersample=N carries it
    for fd, decl in declared(config.params):
        v = getattr(config.params, fd.name)
        if v != fd.default:
            args += _args(flag_of(fd.name, decl), v, config)
    return args, missing


def _args(flag: str, v, config) -> list:
    if flag == "--balance":
        return [flag, f"undersample={config.per_class}" if v == "undersample" else v]
    if isinstance(v, bool):
        return [flag if v else "--no-" + flag[2:]]
    return [flag, arg_value(v)]


def arg_value(v) -> str:
    """A value as a command-line argument: floats short when exact ('0.0001'), tuples comma-joined."""
    if isinstance(v, float):
        short = f"{v:g}"
        return short if float(short) == v else repr(v)
    if isinstance(v, tuple):
        return ",".join(v)
    return str(v)


def declared_choices(name: str) -> list:
    """The values a recipe field's declared constraint allows (e.g. preprocess -> ['v1', 'v2'])."""
    decl = next(d for f, d in declared(Config) if f.name == name)
    return list(decl["constraint"].values)


def declared_flags() -> dict:
    """{parameter name: CLI flag} of every declared parameter (for errors naming a ``param``)."""
    out = {fd.name: flag_of(fd.name, d) for fd, d in declared(Config) if d["cli"]}
    out["per_class"] = "--balance"
    for name, (decl, _) in head_parameters().items():
        out[name] = flag_of(name, decl)
    return out


