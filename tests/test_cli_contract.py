"""The CLI's contract: options validated at the boundary and named in errors, strict JSON,
one --only rule that fails before anything is written, rebuilt commands that parse,
help text for every command and option, run counter/ETA."""

from __future__ import annotations

import json
import math
from dataclasses import replace
import shlex
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from busi_lite.cli import main
from busi_lite.cli.commands import report_command, sweep_command, train_command
from busi_lite.cli.common import BusiGroup, Progress
from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.common.jsonio import dumps
from busi_lite.model.config import Config, paper_grid


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _strict(text):
    def bad(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=bad)


# ---------------------------------------------------------------- JSON
def test_json_never_holds_bare_nan():
    obj = {"a": float("nan"), "b": np.float32("inf"), "c": [np.nan, 1.5, np.int64(3)], "d": (np.array([np.nan, 2.0]),)}
    back = _strict(dumps(obj))
    assert back == {"a": None, "b": None, "c": [None, 1.5, 3], "d": [[None, 2.0]]}


# ---------------------------------------------------------------- validation and error messages
@pytest.mark.parametrize("args, option", [
    (["train", "--lr", "-1"], "--lr"), (["train", "--lr", "0"], "--lr"), (["train", "--batch", "0"], "--batch"),
    (["train", "--epochs", "0"], "--epochs"), (["train", "--balance", "undersample=abc"], "--balance"),
    (["train", "--balance", "undersample=-5"], "--balance"), (["train", "--head", "cnn"], "--head"),
    (["train", "--views", "roi,nope"], "--views"), (["train", "--target-recall", "1.5"], "--target-recall"),
    (["select", "--far-cap", "-1"], "--far-cap"), (["sweep", "--seeds", "0"], "--seeds"),
    (["sweep", "--fractions", "1,0"], "--fractions"), (["sweep", "--heads", "plain,xyz"], "--heads"),
    (["predict", "x.png", "--threshold-malignant", "2"], "--threshold-malignant"),
    (["predict", "x.png", "--low-confidence", "-0.1"], "--low-confidence"),
])
def test_bad_values_name_the_option(args, option, tmp_path):
    r = _invoke(args + ["--cache", tmp_path / "none.h5"] if args[0] in ("train", "sweep", "select") else args)
    assert r.exit_code == 2, r.output
    assert option in r.output and "Traceback" not in r.output


def test_library_errors_get_the_option_name():
    grp = click.Group.__new__(BusiGroup)
    BusiGroup.__init__(grp, name="t")

    @grp.command()
    def boom():
        raise ConfigError("lr=-1.0: the learning rate must be a finite number > 0", "e.g. lr=1e-4", param="lr")

    @grp.command()
    def plain():
        raise BusiError("something broke", "do this")

    r = CliRunner().invoke(grp, ["boom"])
    assert r.exit_code == 2
    assert r.output.strip() == "error: --lr: lr=-1.0: the learning rate must be a finite number > 0 -> e.g. lr=1e-4"
    r = CliRunner().invoke(grp, ["plain"])
    assert r.exit_code == 2 and r.output.strip() == "error: something broke -> do this"


@pytest.mark.parametrize("cmd", ["sweep", "select"])
def test_only_typo_fails_before_anything_is_written(cmd, tmp_path):
    out = tmp_path / "sw"
    (tmp_path / "sw.json").write_text('{"kept": true}')
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [cmd, "--cache", tmp_path / "no_cache.h5", "--only", "model-7,model-77", "--out", out]
    r = _invoke(args)
    assert r.exit_code == 2 and "--only" in r.output and "model-77" in r.output and "model-7pp" in r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "sw.json").read_text() == '{"kept": true}'


def test_name_cannot_leave_the_output_folder(tmp_path):
    r = _invoke(["train", "--cache", tmp_path / "none.h5", "--name", "../../x"])
    assert r.exit_code == 2 and "--name" in r.output
    assert not list(tmp_path.parent.glob("x.npz"))


# ---------------------------------------------------------------- help
def _commands(group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        yield prefix + (name,), cmd


def test_help_summaries_whole_and_every_option_explained():
    for path, cmd in _commands(main):
        short = cmd.get_short_help_str(limit=60)
        assert short and not short.endswith("..."), (path, short)
        for p in cmd.params:
            if isinstance(p, click.Option) and "--help" not in p.opts:
                assert p.help, (path, p.opts)
        r = _invoke(list(path) + ["--help"])
        assert r.exit_code == 0, (path, r.output)


# ---------------------------------------------------------------- rebuilt commands parse with the real group
def _parse(command: str) -> tuple[str, dict]:
    args = shlex.split(command.split("   #")[0])
    assert args[0] == "busi-lite"
    ctx = click.Context(main)
    cmd = main.get_command(ctx, args[1])
    sub = cmd.make_context(args[1], args[2:], parent=ctx)
    return args[1], sub.params


def test_train_command_round_trips():
    meta = {"config": {"name": "model-7pp+mtl", "lr": 5e-05, "batch": 16, "epochs": 70, "masks": True,
                       "balance": "undersample", "per_class": 120, "head": "mtl", "views": ["roi", "mask"],
                       "lam": 0.5, "hidden": 100},
            "calibration": {"target_recall": 0.9}, "split": {"seed": 3}}
    name, p = _parse(train_command(meta, Path("w/m x"), "c.h5"))
    assert name == "train"
    assert p["lr"] == pytest.approx(5e-05) and p["batch"] == 16 and p["epochs"] == 70 and p["masks"] is True
    assert p["balance"] == ("undersample", 120) and p["head"] == "mtl" and p["views"] == ["roi", "mask"]
    assert p["lam"] == 0.5 and p["target_recall"] == 0.9 and p["seed"] == 3
    assert p["name"] == "model-7pp+mtl" and p["out"] == Path("w/m x") and p["cache"] == (Path("c.h5"),)
    plain = {"config": {"name": "model-7", "lr": 1e-4, "batch": 32, "epochs": 50, "masks": False,
                        "balance": "weights", "per_class": 150, "head": "plain", "views": ["roi"], "lam": 1.0},
             "calibration": {}, "split": {"seed": 0}}
    _, p = _parse(train_command(plain, Path("w/m"), "c.h5"))
    assert p["balance"] == ("weights", 150) and p["masks"] is False and p["head"] == "plain"
    for m in (meta, plain):  # the parsed options give back the card's Config, field for field (train makes
        # no grid config: ``base`` stays None)
        want = replace(Config.from_json(m["config"]), base=None)
        assert _train_config(train_command(m, Path("w/m"), "c.h5")) == want


def _train_config(command: str) -> Config:
    """The Config `busi-lite train` would build from ``command`` (parsed by the real click group)."""
    from busi_lite.cli.options import make_config, option_names

    name, p = _parse(command)
    assert name == "train"
    return make_config(p["name"], {k: p[k] for k in option_names()})


def test_train_options_generated_from_every_declaration():
    """Every declared recipe field (but name/per_class, carried by --name/--balance) and every
    registered head's parameter is a real `train` and `site-cv` option."""
    from busi_lite.common.params import declared
    from busi_lite.heads import HEADS, head_kinds

    want = {f"--{f.name}" for f, d in declared(Config) if d["cli"]}
    want |= {f"--{f.name}" for k in head_kinds() for f, _ in declared(HEADS[k].Params)}
    assert {"--lr", "--batch", "--epochs", "--hidden", "--lam", "--C", "--masks", "--flip", "--views"} <= want
    for verb in ("train", "site-cv"):
        opts = {o for p in main.get_command(click.Context(main), verb).params for o in p.opts}
        assert want <= opts, (verb, want - opts)


def test_train_command_logreg_flip_v2_box_card():
    """A logreg head on v2 features with flip averaging and C, plus the lesion-box head: the rebuilt
    command names each (--head logreg --preprocess v2 --flip --C --box) and parses back to the same Config."""
    from busi_lite.model.model import Model

    cfg = Config.build(name="model-7p+logreg+flip", head="logreg", preprocess="v2", flip=True,
                       C=0.05, balance="undersample", per_class=90)
    card = Model.load().card  # the committed default card (a real ModelCard), with this config, trained alone
    card.config, card.selection, card.sources = cfg, None, None
    cmd = train_command(card, Path("w/lr"), "c_v2.h5")
    args = shlex.split(cmd)
    for opt in ("--head", "--preprocess", "--flip", "--C", "--balance"):
        assert opt in args, (opt, cmd)
    assert "--box" in args if card.box is not None else "--box" not in args
    assert "#" not in cmd and _train_config(cmd) == cfg
    _, p = _parse(cmd)
    assert p["box"] is (card.box is not None) and p["seed"] == card.split.seed and p["cache"] == (Path("c_v2.h5"),)
    as_json = card.to_json()
    as_json["box"] = {"stub": True}  # a card with a box section -> --box (JSON form read the same way)
    assert "--box" in shlex.split(train_command(as_json, Path("w/lr"), "c.h5"))
    as_json.pop("box")
    assert "--box" not in shlex.split(train_command(as_json, Path("w/lr"), "c.h5"))
    # a head parameter is an option too (generated from its declaration), e.g. hidden
    card.config = Config.build(name="h", hidden=64, lr=3e-4, epochs=20)
    cmd = train_command(card, Path("w/h"), "c.h5")
    assert "--hidden" in shlex.split(cmd) and "#" not in cmd and _train_config(cmd) == card.config
    # a field train has no option for is said, not dropped silently
    card.config = Config.build(name="h", per_class=90)
    assert train_command(card, Path("w/h"), "c.h5").endswith("# NB: train has no option for per_class=90")


def test_select_command_round_trips():
    meta = {"config": {}, "split": {"seed": 2}, "selection": {
        "criterion": "5-fold OOF malignant recall at FAR <= 0.05 on the training split", "seed": 2,
        "ranking": [{"name": "model-7p+mtl", "config": paper_grid("mtl")[8].to_json()},
                    {"name": "model-7", "config": paper_grid("plain")[7].to_json()}]}}
    name, p = _parse(train_command(meta, Path("w/x"), "c.h5"))
    assert name == "select" and p["heads"] == ["mtl", "plain"] and p["only"] == ["model-7", "model-7p"]
    assert p["far_cap"] == 0.05 and p["seed"] == 2 and p["out"] == Path("w/x")


def test_sweep_and_report_commands_round_trip(tmp_path, monkeypatch):
    runs = [{"seed": s, "fraction": f, "config": {"name": n, "head": h}}
            for s in (0, 1, 2) for f in (1.0, 0.5) for n, h in (("model-7", "plain"), ("model-7+mtl", "mtl"))]
    name, p = _parse(sweep_command({"results": runs}, Path("out/sw.json"), "c.h5"))
    assert name == "sweep" and p["seeds"] == 3 and p["heads"] == ["mtl", "plain"] and p["only"] == ["model-7"]
    assert p["fractions"] == [1.0, 0.5] and p["out"] == Path("out/sw")
    monkeypatch.chdir(tmp_path)
    Path("s.json").write_text("{}")  # --sweep must exist
    cmd = report_command([Path("w/a")], [Path("s.json")], None, None, ["model-7", "model-1"], 4, Path("rep"))
    name, p = _parse(cmd)
    assert name == "report" and p["models"] == (Path("w/a"),) and p["curves"] == (["model-7", "model-1"],)
    assert p["lesion_images"] == 4 and p["out"] == Path("rep")


# ---------------------------------------------------------------- progress
def test_progress_counts_and_estimates():
    t = [100.0]
    pr = Progress(4, clock=lambda: t[0])
    assert pr.prefix("x").startswith("[0/4 0:00 elapsed, ETA ?] x")
    t[0] += 30
    pr.tick()
    assert pr.prefix("run") == "[1/4 0:30 elapsed, ETA 1:30] run"
    t[0] += 30
    pr.tick()
    assert "[2/4 1:00 elapsed, ETA 1:00]" in pr.prefix("")
    assert not math.isnan(pr.total)


def test_train_command_says_when_a_source_was_trained_whole():
    """A source used whole (no held-out split, as BUS-BRA-dev in the shipped model) is something
    `train --data` does not do: the rebuilt command says so instead of passing for the one that made it."""
    from busi_lite.model.model import Model

    d = Model.load().card.to_json()
    assert len(d["sources"]) >= 2  # the shipped model is trained on two sites
    for s in d["sources"]:
        s["n_test"] = 5
    assert "trained whole" not in train_command(d, Path("w/m"), "c.h5")
    d["sources"][-1]["n_test"] = 0
    cmd = train_command(d, Path("w/m"), "c.h5")
    assert f"# NB: {d['sources'][-1]['name']} trained whole (no held-out split)" in cmd
