"""Report statistics and terminal output: formatting of mean [95 % CI], the paper's
figures per configuration, sweep rows, curves over seeds, the sweep table and CSV.

Inputs are sweep summaries (rows of ``experiments.aggregate``: name, fraction, seeds,
config, {metric: {mean, lo, hi}}) and :class:`~busi_lite.report.inputs.ModelInput`.
No plotting here.
"""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np

from busi_lite.common.atomic import write_text
from busi_lite.common.params import declared
from busi_lite.evaluation.metrics import t_critical_95
from busi_lite.heads import HEADS
from busi_lite.model.config import Config, base_of, flat_view
from busi_lite.report.inputs import ModelInput, SweepInput

TABLE_KEYS = ("malignant_recall", "malignant_far", "malignant_precision", "malignant_auc", "accuracy",
              "macro_f1", "test_loss", "dice", "train_seconds")

RATE_KEYS = ("malignant_recall", "malignant_mar", "malignant_far", "malignant_precision")


# ---------------------------------------------------------------- small helpers

def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(s)).strip("_") or "x"


def num_text(v, digits=3) -> str:
    return "-" if is_nan(v) else f"{v:.{digits}f}"


def pct_text(v, digits=1) -> str:
    return "-" if is_nan(v) else f"{100 * v:.{digits}f}"


def mean_ci_text(d: dict, scale=100.0, digits=1, clip=(0.0, 1.0), ci_digits=None, sep=", ") -> str:
    """'84.4 [80.1, 88.7]' from {mean, lo, hi}; interval clipped to ``clip`` (a rate's range),
    its ends shown with ``ci_digits`` (default ``digits``) decimals."""
    m, lo, hi = d["mean"], d["lo"], d["hi"]
    if is_nan(m):
        return "-"
    if is_nan(lo) or is_nan(hi):
        return f"{scale * m:.{digits}f}"
    if clip is not None:
        lo, hi = max(lo, clip[0]), min(hi, clip[1])
    k = digits if ci_digits is None else ci_digits
    return f"{scale * m:.{digits}f} [{scale * lo:.{k}f}{sep}{scale * hi:.{k}f}]"


def paper_name(config: dict) -> str | None:
    """The paper's model (Table 1) whose hyper-parameters ``config`` has, else None."""
    from busi_lite.common.paper import PAPER

    base = base_of(config)
    if base in PAPER:
        return base
    config = flat_view(config)
    for name, (kw, _) in PAPER.items():
        want = {"masks": False, "balance": "none", **kw}
        if all(config.get(k) == v or (isinstance(v, float) and isinstance(config.get(k), (int, float))
                                      and math.isclose(config.get(k), v)) for k, v in want.items()):
            return name
    return None


def paper_figures(name: str | None) -> dict:
    from busi_lite.common.paper import PAPER

    if name is None or name not in PAPER:
        return {}
    acc, rec, far, prec = PAPER[name][1]
    return {"malignant_accuracy": acc, "malignant_recall": rec / 100, "malignant_mar": 1 - rec / 100,
            "malignant_far": far / 100, "malignant_precision": prec / 100}

# ---------------------------------------------------------------- curves (Fig. 1 and 2)

def model_curves(mi: ModelInput) -> dict:
    h = mi.meta.history or {}  # a plain dict field of the card: {curve name: [per-epoch values]}
    series = {k: (np.asarray(h[k], float), None, None) for k in ("train_acc", "val_acc", "train_loss", "val_loss",
                                                                 "train_seg_loss") if h.get(k)}
    return {"label": f"{mi.name}\n({mi.meta.config.head} head, split seed {mi.meta.split.seed})",
            "series": series, "n": 1}


def sweep_curves(sw: SweepInput, name: str, fraction: float | None = None) -> dict:
    """Mean and 95 % interval over seeds of each per-epoch curve of config ``name``."""
    runs = [r for r in sw.data["results"] if r["config"]["name"] == name]
    if fraction is None:
        fraction = max(r["fraction"] for r in runs)
    runs = [r for r in runs if r["fraction"] == fraction]

    series = {}
    for k in ("train_acc", "val_acc", "train_loss", "val_loss", "train_seg_loss"):
        arrs = [np.asarray(r["history"].get(k) or [], float) for r in runs]
        if not arrs or any(len(a) == 0 for a in arrs):
            continue
        n_ep = min(len(a) for a in arrs)
        a = np.stack([x[:n_ep] for x in arrs])
        mean = a.mean(axis=0)
        if len(a) > 1:
            half = t_critical_95(len(a) - 1) * a.std(axis=0, ddof=1) / math.sqrt(len(a))
            series[k] = (mean, mean - half, mean + half)
        else:
            series[k] = (mean, None, None)
    frac = "" if fraction == 1 else f", fraction {fraction:g}"
    return {"label": f"{name}\n(sweep {sw.name}: mean of {len(runs)} seeds{frac})", "series": series, "n": len(runs)}


def full_rows(summary: list[dict]) -> list[dict]:
    """Summary rows at the largest training fraction of each config."""
    best = {}
    for r in summary:
        if r["name"] not in best or r["fraction"] > best[r["name"]]["fraction"]:
            best[r["name"]] = r
    return list(best.values())


def best_config(summary: list[dict]) -> str | None:
    """Highest mean malignant recall (the paper's criterion), ties by accuracy, at the full fraction."""
    rows = [r for r in full_rows(summary) if not is_nan(r["malignant_recall"]["mean"])]
    if not rows:
        return None
    return max(rows, key=lambda r: (r["malignant_recall"]["mean"], _nz(r["accuracy"]["mean"])))["name"]


def _nz(x):
    return -1.0 if is_nan(x) else x


def bases(summary: list[dict]) -> dict:
    """{config name: its paper model (``base``) or None} of summary rows."""
    return {r["name"]: base_of(r.get("config")) for r in summary}


def curve_names(sw: SweepInput, wanted: list[str]) -> list[str]:
    rows = full_rows(sw.data["summary"])
    names = [r["name"] for r in rows]
    base = bases(rows)
    if wanted:
        out = []
        for w in wanted:
            hit = [n for n in names if n == w] or [n for n in names if base[n] == w]
            out += [h for h in hit if h not in out]
        return out
    out = []
    b = best_config(sw.data["summary"])
    for n in [b] + [n for n in names if base[n] == "model-7pp"]:
        if n and n not in out:
            out.append(n)
    return out

def _fmt(d, clip=(0.0, 1.0)) -> str:
    """'0.794 [0.55,1.00]': the terminal form of :func:`mean_ci_text`."""
    return mean_ci_text(d, scale=1, digits=3, clip=clip, ci_digits=2, sep=",")


def _as_json(summary) -> list[dict]:
    """Summary rows as sweep-JSON dicts: records.SummaryRow (from ``busi-lite sweep``) via to_json,
    dicts (read from OUT.json) as they are. The report reads sweeps as their JSON throughout."""
    return [r.to_json() if hasattr(r, "to_json") else r for r in summary]


def sweep_table(summary: list[dict]) -> str:
    """Human table: our mean [95 % CI] over seeds beside the paper's single-split figure."""
    summary = _as_json(summary)
    head = f"{'config':14s} {'frac':>4s}  {'recall (paper)':>26s}  {'FAR (paper)':>26s}  " \
           f"{'precision (paper)':>26s}  {'AUC':>18s}  {'accuracy':>18s}  {'Dice':>6s}  {'s/run':>5s}"
    lines = [head, "-" * len(head)]
    for r in summary:
        p = r.get("paper", {})

        def both(key, pkey):
            ours = _fmt(r[key])
            return f"{ours} ({p[pkey]:.3f})" if pkey in p else ours
        dice = r["dice"]["mean"]
        secs = r["train_seconds"]["mean"]
        lines.append(f"{r['name']:14s} {r['fraction']:>4g}  {both('malignant_recall', 'malignant_recall'):>26s}  "
                     f"{both('malignant_far', 'malignant_far'):>26s}  "
                     f"{both('malignant_precision', 'malignant_precision'):>26s}  {_fmt(r['malignant_auc']):>18s}  "
                     f"{_fmt(r['accuracy']):>18s}  {'-' if is_nan(dice) else f'{dice:.3f}':>6s}  "
                     f"{'-' if is_nan(secs) else f'{secs:5.1f}':>5s}")
    return "\n".join(lines)


def config_columns(summary: list[dict]) -> list[str]:
    """The config columns of a sweep table: the recipe's declared fields, then the declared parameters of
    the heads in ``summary`` (busi_lite.common.params), so a new parameter gets its column by itself."""
    cols = [f.name for f, _ in declared(Config) if f.name != "name"]
    for kind in dict.fromkeys(flat_view(r["config"]).get("head", "plain") for r in summary):
        if kind in HEADS:
            cols += [f.name for f, _ in declared(HEADS[kind].Params) if f.name not in cols]
    return cols


def _cell(v):
    return ",".join(v) if isinstance(v, (list, tuple)) else v


def write_sweep_csv(summary: list[dict], path) -> None:
    """One row per (config, fraction): mean, lo, hi of each key metric and the paper's figures."""
    summary = _as_json(summary)
    knobs = config_columns(summary)
    cols = ["name", "fraction", "n_seeds", *knobs]
    for k in TABLE_KEYS + ("malignant_mar",):
        cols += [f"{k}_mean", f"{k}_lo", f"{k}_hi"]
    cols += ["paper_malignant_recall", "paper_malignant_far", "paper_malignant_precision"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, lineterminator="\r\n")
    w.writeheader()
    for r in summary:
        c = flat_view(r["config"])
        row = {"name": r["name"], "fraction": r["fraction"], "n_seeds": len(r["seeds"]),
               **{k: _cell(c.get(k, "")) for k in knobs}}
        for k in TABLE_KEYS + ("malignant_mar",):
            for s in ("mean", "lo", "hi"):
                v = r[k][s]
                row[f"{k}_{s}"] = "" if v is None else v
        for k in ("malignant_recall", "malignant_far", "malignant_precision"):
            row[f"paper_{k}"] = r.get("paper", {}).get(k, "")
        w.writerow(row)
    write_text(path, buf.getvalue())
