"""Rebuild `busi-lite` command lines from what a run left behind (for a report's "Reproduce").

``train_command`` (from a model card: config, calibration, split, selection),
``sweep_command`` (from a sweep result), ``extract_command``, ``evaluate_command``
and ``report_command``. They live beside the CLI because they must stay in step with
its options: the tests parse every rebuilt command with the real click group.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from busi_lite.cli.options import arg_value, config_args


def train_command(meta, stem, cache: str) -> str:
    """The `train` (or, for a selected model, `select`) command that rebuilds the model ``stem``.

    ``meta``: its model card (card.ModelCard) or the card's JSON dict. A field of the card's Config
    that `train` cannot set is named in a trailing ``# NB`` comment."""
    from busi_lite.common.paper import PAPER
    from busi_lite.model.config import Config, base_of

    d = meta.to_json() if hasattr(meta, "to_json") else meta  # the card as JSON (cards are read as documents)
    sel, split = d.get("selection") or {}, d.get("split") or {}
    if sel.get("ranking"):
        names = [r.get("name", "") for r in sel["ranking"]]
        cfgs = [r.get("config") or {} for r in sel["ranking"]]
        heads = sorted({c.get("head", "plain") for c in cfgs})
        pps = sorted({c.get("preprocess", "v1") for c in cfgs})
        flips = sorted({bool(c.get("flip", False)) for c in cfgs})
        bases = sorted({base_of(c) or n for c, n in zip(cfgs, names)})
        args = ["busi-lite", "select"] + (["--cache", cache] if pps == ["v1"] else []) + ["--heads", ",".join(heads)]
        if pps != ["v1"]:  # each preprocessing's default cache (features.default_cache)
            args += ["--preprocess", ",".join(pps)]
        if flips != [False]:
            args += ["--flip", "both" if len(flips) == 2 else "on"]
        if bases != sorted(PAPER):
            args += ["--only", ",".join(bases)]
        cap = re.search(r"FAR <= ([0-9.eE+-]+)", str(sel.get("criterion", "")))
        if cap:
            args += ["--far-cap", cap.group(1)]
        args += ["--seed", str(sel.get("seed", split.get("seed", 0))), "--out", str(stem)]
        return shlex.join(args)
    config = meta.config if isinstance(getattr(meta, "config", None), Config) else Config.from_json(d.get("config", {}))
    opts, missing = config_args(config)
    sources = d.get("sources") or []
    if sources:  # several sources: each as given (a dataset with --data, a cache with --cache)
        args = ["busi-lite", "train"]
        for src in sources:  # a feature cache file with --cache, a dataset folder or manifest with --data
            loc = str(src.get("location"))
            args += ["--cache" if src.get("kind") == "cache" and loc.endswith((".h5", ".hdf5")) else "--data", loc]
        if sources[0].get("weighting", "balanced") != "balanced":
            args += ["--source-weight", sources[0]["weighting"]]
        args += opts
    else:
        args = ["busi-lite", "train", "--cache", cache] + opts
    recall = (d.get("calibration") or {}).get("target_recall", 0.95)
    if recall != 0.95:
        args += ["--target-recall", arg_value(float(recall))]
    if d.get("box"):
        args += ["--box"]
    args += ["--seed", str(split.get("seed", 0)), "--out", str(stem)]
    whole = [str(src.get("name")) for src in sources if src.get("n_test") == 0]
    nb = ([f"train has no option for {', '.join(missing)}"] if missing else []) + \
         ([f"{', '.join(whole)} trained whole (no held-out split), which train does not do: this command "
           f"trains a similar model, not this one"] if whole else [])
    return shlex.join(args) + (f"   # NB: {'; '.join(nb)}" if nb else "")


def sweep_command(data: dict, path, cache: str) -> str:
    """The `sweep` command that rebuilds the sweep result ``data`` (written to ``path``)."""
    from busi_lite.common.paper import PAPER
    from busi_lite.model.config import base_of

    res = data["results"]
    seeds = sorted({r["seed"] for r in res})
    heads = sorted({r["config"]["head"] for r in res})
    fracs = sorted({r["fraction"] for r in res}, reverse=True)
    args = ["busi-lite", "sweep", "--cache", cache, "--seeds", str(len(seeds))]
    if heads != ["plain"]:
        args += ["--heads", ",".join(heads)]
    bases = sorted({base_of(r["config"]) or r["config"]["name"] for r in res})
    if bases != sorted(PAPER):
        args += ["--only", ",".join(bases)]
    if fracs != [1.0]:
        args += ["--fractions", ",".join(f"{f:g}" for f in fracs)]
    args += ["--out", str(Path(path).with_suffix(""))]
    note = "" if seeds == list(range(len(seeds))) else f"   # NB: the file holds seeds {seeds}"
    return shlex.join(args) + note


def extract_command(root, cache: str) -> str:
    return shlex.join(["busi-lite", "extract", "--data", str(root or "BUSI_ROOT"), "--out", cache])


def evaluate_command(model_stem, cache: str, out) -> str:
    return shlex.join(["busi-lite", "evaluate", "--model", str(model_stem or "MODEL"), "--cache", cache,
                       "--json"]) + f" > {shlex.quote(str(out or 'FLAGS.json'))}"


def report_command(models=(), sweeps=(), cache=None, flags_json=None, curves=(), lesion_images: int = 6,
                   out="out/report") -> str:
    args = ["busi-lite", "report"]
    for m in models:
        args += ["--model", str(m)]
    for s in sweeps:
        args += ["--sweep", str(s)]
    if cache:
        args += ["--cache", str(cache)]
    if flags_json:
        args += ["--flags-json", str(flags_json)]
    if curves:
        args += ["--curves", ",".join(curves)]
    if lesion_images != 6:
        args += ["--lesion-images", str(lesion_images)]
    args += ["--out", str(out)]
    return shlex.join(args)


# ---------------------------------------------------------------- report --external (another hospital)

def external_evaluate_command(model_stem, data_root, cache, out, per_image: bool = True) -> str:
    """The `evaluate --data DIR` command that writes an external evaluation JSON to ``out``
    (``model_stem`` None: the packaged default model, no --model)."""
    args = ["busi-lite", "evaluate"] + (["--model", str(model_stem)] if model_stem else [])
    args += ["--data", str(data_root or "DATA_DIR")] + (["--cache", str(cache)] if cache else [])
    args += ["--json"] + (["--per-image"] if per_image else [])
    return shlex.join(args) + f" > {shlex.quote(str(out))}"


def report_external_command(externals=(), **report_kw) -> str:
    """report_command plus one ``--external FILE`` per external evaluation."""
    cmd = report_command(**report_kw)
    return cmd + "".join(f" --external {shlex.quote(str(x))}" for x in externals)
