"""Reports: terminal tables, CSV, and the HTML report with the paper's figures."""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backbone import file_sha256

TABLE_KEYS = ("malignant_recall", "malignant_far", "malignant_precision", "malignant_auc", "accuracy",
              "macro_f1", "test_loss", "dice", "train_seconds")


def _fmt(d, pct=False) -> str:
    m, lo, hi = d["mean"], d["lo"], d["hi"]
    if m != m:  # nan
        return "-"
    if lo != lo:
        return f"{m:.3f}"
    return f"{m:.3f} [{lo:.2f},{hi:.2f}]"


def sweep_table(summary: list[dict]) -> str:
    """Human table: our mean [95 % CI] over seeds beside the paper's single-split figure."""
    head = f"{'config':14s} {'frac':>4s}  {'recall (paper)':>26s}  {'FAR (paper)':>26s}  " \
           f"{'precision (paper)':>26s}  {'AUC':>18s}  {'accuracy':>18s}  {'Dice':>6s}  {'s/run':>5s}"
    lines = [head, "-" * len(head)]
    for r in summary:
        p = r.get("paper", {})

        def both(key, pkey):
            ours = _fmt(r[key])
            return f"{ours} ({p[pkey]:.3f})" if pkey in p else ours
        dice = r["dice"]["mean"]
        lines.append(f"{r['name']:14s} {r['fraction']:>4g}  {both('malignant_recall', 'malignant_recall'):>26s}  "
                     f"{both('malignant_far', 'malignant_far'):>26s}  "
                     f"{both('malignant_precision', 'malignant_precision'):>26s}  {_fmt(r['malignant_auc']):>18s}  "
                     f"{_fmt(r['accuracy']):>18s}  {'-' if dice != dice else f'{dice:.3f}':>6s}  "
                     f"{r['train_seconds']['mean']:5.1f}")
    return "\n".join(lines)


def write_sweep_csv(summary: list[dict], path) -> None:
    """One row per (config, fraction): mean, lo, hi of each key metric and the paper's figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["name", "fraction", "n_seeds", "lr", "batch", "epochs", "masks", "balance", "head"]
    for k in TABLE_KEYS + ("malignant_mar",):
        cols += [f"{k}_mean", f"{k}_lo", f"{k}_hi"]
    cols += ["paper_malignant_recall", "paper_malignant_far", "paper_malignant_precision"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in summary:
            c = r["config"]
            row = {"name": r["name"], "fraction": r["fraction"], "n_seeds": len(r["seeds"]), "lr": c["lr"],
                   "batch": c["batch"], "epochs": c["epochs"], "masks": c["masks"], "balance": c["balance"],
                   "head": c["head"]}
            for k in TABLE_KEYS + ("malignant_mar",):
                for s in ("mean", "lo", "hi"):
                    row[f"{k}_{s}"] = r[k][s]
            for k in ("malignant_recall", "malignant_far", "malignant_precision"):
                row[f"paper_{k}"] = r.get("paper", {}).get(k, "")
            w.writerow(row)
    os.replace(tmp, path)


# ====================================================================== HTML / Markdown report
#
# build_report() turns trained models (NAME.npz + NAME.json), sweep results (sweep.json) and an
# optional `busi-lite evaluate --json` output into DIR/report.html (self-contained: figures as
# base64 data URIs), DIR/report.md (same tables, figures linked) and the figures as DIR/*.png.
# matplotlib is optional (busi-lite[report]); it is imported only here, with the Agg backend.

RATE_KEYS = ("malignant_recall", "malignant_mar", "malignant_far", "malignant_precision")
DPI = 130


class ReportError(ValueError):
    """An input of the report is missing or does not fit; the message says what to do."""


def _pyplot():
    """matplotlib.pyplot with the Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise ReportError("the report needs matplotlib -> pip install 'busi-lite[report]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
       "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12}


# ---------------------------------------------------------------- small helpers

def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(s)).strip("_") or "x"


def _num(v, digits=3) -> str:
    return "-" if _nan(v) else f"{v:.{digits}f}"


def _pct(v, digits=1) -> str:
    return "-" if _nan(v) else f"{100 * v:.{digits}f}"


def _mean_ci_text(d: dict, scale=100.0, digits=1, clip=(0.0, 1.0)) -> str:
    """'84.4 [80.1, 88.7]' from {mean, lo, hi}; interval clipped to ``clip`` (a rate's range)."""
    m, lo, hi = d["mean"], d["lo"], d["hi"]
    if _nan(m):
        return "-"
    if _nan(lo) or _nan(hi):
        return f"{scale * m:.{digits}f}"
    if clip is not None:
        lo, hi = max(lo, clip[0]), min(hi, clip[1])
    return f"{scale * m:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def paper_name(config: dict) -> str | None:
    """The paper's model (Table 1) whose hyper-parameters ``config`` has, else None."""
    from .paper import PAPER

    base = str(config.get("name", "")).split("+")[0]
    if base in PAPER:
        return base
    for name, (kw, _) in PAPER.items():
        want = {"masks": False, "balance": "none", **kw}
        if all(config.get(k) == v or (isinstance(v, float) and isinstance(config.get(k), (int, float))
                                      and math.isclose(config.get(k), v)) for k, v in want.items()):
            return name
    return None


def paper_figures(name: str | None) -> dict:
    from .paper import PAPER

    if name is None or name not in PAPER:
        return {}
    acc, rec, far, prec = PAPER[name][1]
    return {"malignant_accuracy": acc, "malignant_recall": rec / 100, "malignant_mar": 1 - rec / 100,
            "malignant_far": far / 100, "malignant_precision": prec / 100}


# ---------------------------------------------------------------- tables (rendered to HTML and Markdown)

def _text(x) -> str:
    """HTML-escape text content (quotes stay readable; attributes use html.escape)."""
    return html.escape(str(x), quote=False)


@dataclass
class Table:
    caption: str
    header: list
    rows: list
    note: str = ""

    def html(self) -> str:
        e = _text
        th = "".join(f"<th>{e(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        note = f'<p class="note">{e(self.note)}</p>' if self.note else ""
        return (f'<table><caption>{e(self.caption)}</caption><thead><tr>{th}</tr></thead>'
                f"<tbody>{body}</tbody></table>{note}")

    def md(self) -> str:
        def cell(c):
            return str(c).replace("|", "\\|").replace("\n", " ")
        lines = [f"**{self.caption}**", "", "| " + " | ".join(cell(h) for h in self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in self.rows]
        if self.note:
            lines += ["", f"_{self.note}_"]
        return "\n".join(lines)


@dataclass
class Figure:
    file: str
    caption: str
    png: bytes = b""


@dataclass
class Section:
    title: str
    text: list = field(default_factory=list)      # paragraphs (plain text)
    items: list = field(default_factory=list)     # Table | Figure, in order


# ---------------------------------------------------------------- inputs

@dataclass
class ModelInput:
    name: str           # display name (file stem)
    path: Path          # stem (NAME)
    meta: dict
    model: object = None  # busi_lite.model.Model, for lesion maps


@dataclass
class SweepInput:
    name: str
    path: Path
    data: dict


def load_model_input(path) -> ModelInput:
    from .model import Model, _paths

    m = Model.load(path)
    npz, _ = _paths(path)
    return ModelInput(name=npz.stem, path=npz.with_suffix(""), meta=m.meta, model=m)


def _read_json(path: Path, what: str, fix: str):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the {what} ({e}) -> {fix}") from e


def load_sweep_input(path) -> SweepInput:
    path = Path(path)
    data = _read_json(path, "sweep result", "pass the OUT.json written by `busi-lite sweep --out OUT`")
    if not isinstance(data, dict) or "summary" not in data or "results" not in data:
        raise ReportError(f"{path}: not a sweep result (no 'summary'/'results') -> pass the OUT.json written by "
                          "`busi-lite sweep --out OUT`")
    return SweepInput(name=path.stem, path=path, data=data)


def load_flags_input(path) -> list[dict]:
    path = Path(path)
    data = _read_json(path, "flags evidence",
                      "write it with `busi-lite evaluate --model NAME --cache CACHE --json > FILE`")
    runs = data if isinstance(data, list) else [data]
    for r in runs:
        if not isinstance(r, dict) or "flags" not in r or "any_flag" not in r:
            raise ReportError(f"{path}: not the JSON of `busi-lite evaluate --json` (no 'flags'/'any_flag')")
    return runs


# ---------------------------------------------------------------- curves (Fig. 1 and 2)

def model_curves(mi: ModelInput) -> dict:
    h = mi.meta.get("history") or {}
    c = mi.meta.get("config", {})
    series = {k: (np.asarray(h[k], float), None, None) for k in ("train_acc", "val_acc", "train_loss", "val_loss",
                                                                 "train_seg_loss") if h.get(k)}
    return {"label": f"{mi.name}\n({c.get('head', '?')} head, split seed {mi.meta.get('split', {}).get('seed', '?')})",
            "series": series, "n": 1}


def sweep_curves(sw: SweepInput, name: str, fraction: float | None = None) -> dict:
    """Mean and 95 % interval over seeds of each per-epoch curve of config ``name``."""
    runs = [r for r in sw.data["results"] if r["config"]["name"] == name]
    if fraction is None:
        fraction = max(r["fraction"] for r in runs)
    runs = [r for r in runs if r["fraction"] == fraction]
    from .metrics import _t_critical_95

    series = {}
    for k in ("train_acc", "val_acc", "train_loss", "val_loss", "train_seg_loss"):
        arrs = [np.asarray(r["history"].get(k) or [], float) for r in runs]
        if not arrs or any(len(a) == 0 for a in arrs):
            continue
        n_ep = min(len(a) for a in arrs)
        a = np.stack([x[:n_ep] for x in arrs])
        mean = a.mean(axis=0)
        if len(a) > 1:
            half = _t_critical_95(len(a) - 1) * a.std(axis=0, ddof=1) / math.sqrt(len(a))
            series[k] = (mean, mean - half, mean + half)
        else:
            series[k] = (mean, None, None)
    frac = "" if fraction == 1 else f", fraction {fraction:g}"
    return {"label": f"{name}\n(sweep {sw.name}: mean of {len(runs)} seeds{frac})", "series": series, "n": len(runs)}


def _full_rows(summary: list[dict]) -> list[dict]:
    """Summary rows at the largest training fraction of each config."""
    best = {}
    for r in summary:
        if r["name"] not in best or r["fraction"] > best[r["name"]]["fraction"]:
            best[r["name"]] = r
    return list(best.values())


def best_config(summary: list[dict]) -> str | None:
    """Highest mean malignant recall (the paper's criterion), ties by accuracy, at the full fraction."""
    rows = [r for r in _full_rows(summary) if not _nan(r["malignant_recall"]["mean"])]
    if not rows:
        return None
    return max(rows, key=lambda r: (r["malignant_recall"]["mean"], _nz(r["accuracy"]["mean"])))["name"]


def _nz(x):
    return -1.0 if _nan(x) else x


def curve_names(sw: SweepInput, wanted: list[str]) -> list[str]:
    names = [r["name"] for r in _full_rows(sw.data["summary"])]
    if wanted:
        out = []
        for w in wanted:
            hit = [n for n in names if n == w] or [n for n in names if n.split("+")[0] == w]
            out += [h for h in hit if h not in out]
        return out
    out = []
    b = best_config(sw.data["summary"])
    for n in [b] + [n for n in names if n.split("+")[0] == "model-7pp"]:
        if n and n not in out:
            out.append(n)
    return out


def _ncols(n: int) -> int:
    return n if n <= 3 else (2 if n == 4 else 3)


def fig_curves(curves: list[dict], kind: str):
    """kind 'acc' (Fig. 1) or 'loss' (Fig. 2): one panel per configuration, train and test."""
    plt = _pyplot()
    n = len(curves)
    ncols = _ncols(n)
    nrows = math.ceil(n / ncols)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False,
                                 sharey=True, layout="constrained")
        keys = [("train_acc", "train", "C0"), ("val_acc", "test (held-out split)", "C3")] if kind == "acc" else \
            [("train_loss", "train (cross-entropy)", "C0"), ("val_loss", "test (cross-entropy)", "C3"),
             ("train_seg_loss", "train lesion-map loss", "C2")]
        for ax, c in zip(axes.flat, curves):
            for k, lab, col in keys:
                if k not in c["series"]:
                    continue
                mean, lo, hi = c["series"][k]
                ep = np.arange(1, len(mean) + 1)
                ax.plot(ep, mean, color=col, lw=1.6, ls=":" if k == "train_seg_loss" else "-", label=lab)
                if lo is not None:
                    ax.fill_between(ep, lo, hi, color=col, alpha=0.2, lw=0)
            ax.set_title(c["label"], fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right" if kind == "acc" else "upper right")
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle("Fig. 1 - accuracy per epoch" if kind == "acc" else "Fig. 2 - loss per epoch")
    return fig


# ---------------------------------------------------------------- Fig. 3 confusion

def fig_confusion(panels: list[tuple[str, list]], classes) -> object:
    """panels: (title, confusion [C,C] rows true / cols predicted)."""
    plt = _pyplot()
    n = len(panels)
    ncols = _ncols(n)
    nrows = math.ceil(n / ncols)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 4.0 * nrows), squeeze=False,
                                 layout="constrained")
        im = None
        for ax, (title, cm) in zip(axes.flat, panels):
            cm = np.asarray(cm, float)
            rows = cm.sum(axis=1, keepdims=True)
            pct = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) * 100
            im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    ax.text(j, i, f"{int(cm[i, j])}\n{pct[i, j]:.1f}%", ha="center", va="center", fontsize=10,
                            color="white" if pct[i, j] > 55 else "black")
            ax.set_xticks(range(len(classes)), classes)
            ax.set_yticks(range(len(classes)), classes)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.set_title(title, fontsize=10)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.colorbar(im, ax=axes, shrink=0.8, label="% of the true class (row)")
        fig.suptitle("Fig. 3 - confusion matrix on the test split (count and row %)")
    return fig


# ---------------------------------------------------------------- ROC

def fig_roc(models: list[ModelInput]):
    from . import metrics as M

    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 6.4 + 0.35 * 3 * len(models)), layout="constrained")
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
        for i, mi in enumerate(models):
            tp = mi.meta["test_predictions"]
            y = np.asarray(tp["y"])
            mal = list(mi.meta["classes"]).index("malignant")
            score = np.asarray(tp["proba"], float)[:, mal]
            fpr, tpr, _ = M.roc_curve(y == mal, score)
            auc = M.roc_auc(y == mal, score)
            col = f"C{i}"
            ax.plot(fpr, tpr, color=col, lw=1.8, label=f"{mi.name} (AUC {auc:.3f})")
            am = mi.meta["metrics"]["test_argmax"]["malignant"]
            ax.plot(am["far"], am["recall"], "o", ms=8, mfc="white", mec=col, mew=2,
                    label=f"{mi.name} argmax: recall {am['recall']:.2f}, FAR {am['far']:.2f}")
            op = mi.meta["metrics"].get("test_operating_point", {}).get("malignant")
            t = mi.meta.get("calibration", {}).get("malignant_threshold")
            if op and t is not None:
                ax.plot(op["far"], op["recall"], "*", ms=15, color=col, mec="black", mew=0.6,
                        label=f"{mi.name} operating point p>={t:.3f}: recall {op['recall']:.2f}, FAR {op['far']:.2f}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false alarm rate (FPR): benign+normal called malignant")
        ax.set_ylabel("malignant recall (TPR)")
        ax.set_title("ROC, malignant vs rest, test split")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=9, frameon=False)
    return fig


# ---------------------------------------------------------------- dataset size

def fig_fractions(summary: list[dict]):
    plt = _pyplot()
    names = sorted({r["name"] for r in summary})
    metrics = [("malignant_recall", "malignant recall"), ("malignant_far", "false alarm rate"),
               ("malignant_auc", "malignant AUC"), ("accuracy", "test accuracy")]
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), layout="constrained")
        for i, name in enumerate(names):
            rs = sorted((r for r in summary if r["name"] == name), key=lambda r: r["fraction"])
            x = np.array([r["fraction"] for r in rs], float)
            for ax, (k, lab) in zip(axes, metrics):
                m = np.array([r[k]["mean"] for r in rs], float)
                lo = np.array([r[k]["lo"] for r in rs], float)
                hi = np.array([r[k]["hi"] for r in rs], float)
                lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)  # rates: interval clipped to [0, 1]
                err = np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])
                ax.errorbar(x * 100, m, yerr=err, marker="o", capsize=3, color=f"C{i}", label=name)
                ax.set_xticks(sorted({round(f * 100) for f in x}))
                ax.set_title(lab)
                ax.set_xlabel("training images used (%)")
                ax.grid(alpha=0.3)
        axes[0].set_ylabel("mean over seeds, 95 % CI (clipped to [0, 1])")
        axes[0].legend(loc="lower right")
        fig.suptitle("Dataset-size sensitivity (test split)")
    return fig


# ---------------------------------------------------------------- lesion maps (multi-task head)

def lesion_examples(mi: ModelInput, cache, n: int = 6) -> tuple[list[dict], str]:
    """Up to ``n`` test images with a lesion mask (half benign, half malignant, evenly spread):
    the centre crop the model sees, the predicted 7x7 map upsampled, the true mask, Dice.
    Returns (examples, note)."""
    from . import metrics as M
    from .backbone import SIZE, center_box
    from .data import ImageError, read_rgb
    from .geometry import upsample

    sp_meta = mi.meta.get("split") or {}
    if mi.meta.get("backbone_sha256") != cache.backbone_sha256:
        return [], f"cache {cache.path} comes from another backbone than {mi.name}; lesion examples skipped."
    sp = cache.split(int(sp_meta.get("seed", 0)), float(sp_meta.get("test_fraction", 0.15)))
    if sp_meta.get("digest") and sp.digest(cache.paths) != sp_meta["digest"]:
        return [], (f"cache {cache.path} gives another split than the one {mi.name} was trained on; "
                    "lesion examples skipped (use the model's cache).")
    rows = np.asarray(sp.test)
    rows = rows[cache.has_mask[rows]]
    pick = []
    for cname in ("malignant", "benign"):
        if cname not in cache.classes:
            continue
        r = rows[cache.labels[rows] == cache.classes.index(cname)]
        k = min(len(r), n - len(pick) if cname == "benign" else n // 2 + n % 2)
        if k:
            pick += list(r[np.linspace(0, len(r) - 1, k).round().astype(int)])
    if len(pick) < n:  # fill from whatever is left
        pick += [x for x in rows if x not in pick][: n - len(pick)]
    if not pick:
        return [], "no test image with a lesion mask."
    pick = np.asarray(pick[:n])
    r = mi.model.predict_features(cache.spatial("raw", pick))
    masks = cache.mask224(pick)
    root = Path(cache.attrs.get("dataset_root", ""))
    out, missing = [], 0
    for i, row in enumerate(pick):
        pm = upsample(r["lesion"][i].reshape(7, 7), SIZE, SIZE)
        d, j = M.dice_iou(pm >= 0.5, masks[i])
        try:
            rgb = read_rgb(root / cache.paths[row])
            from PIL import Image

            im = Image.fromarray(rgb)
            crop = np.asarray(im.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=center_box(*im.size)))
        except (ImageError, OSError):
            crop, missing = None, missing + 1
        out.append({"path": cache.paths[row], "label": cache.classes[cache.labels[row]],
                    "pred": mi.model.classes[int(np.argmax(r["proba"][i]))],
                    "p_malignant": float(r["proba"][i][list(mi.model.classes).index("malignant")]),
                    "image": crop, "pred_map": pm, "mask": masks[i], "dice": d, "iou": j})
    note = f"{missing} image file(s) not found under {root}; shown on a grey background." if missing else ""
    return out, note


def fig_lesions(name: str, ex: list[dict]):
    plt = _pyplot()
    n = len(ex)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(3, n, figsize=(2.3 * n + 0.9, 7.6), squeeze=False, layout="constrained")
        hm = None
        for j, e in enumerate(ex):
            bg = e["image"] if e["image"] is not None else np.full((224, 224, 3), 128, np.uint8)
            a0, a1, a2 = axes[:, j]
            a0.imshow(bg)
            a0.set_title(f"{Path(e['path']).name}\ntrue {e['label']}, pred {e['pred']}\np(malignant) "
                         f"{e['p_malignant']:.2f}", fontsize=8.5)
            a1.imshow(bg)
            hm = a1.imshow(e["pred_map"], cmap="jet", vmin=0, vmax=1, alpha=0.45)
            if e["pred_map"].max() >= 0.5 > e["pred_map"].min():
                a1.contour(e["pred_map"], levels=[0.5], colors="white", linewidths=1.5)
            a1.set_title(f"Dice {e['dice']:.2f}, IoU {e['iou']:.2f}", fontsize=9)
            a2.imshow(bg)
            m = e["mask"].astype(float)
            a2.imshow(np.ma.masked_where(m < 0.5, m), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            if m.max() > 0:
                a2.contour(m, levels=[0.5], colors="yellow", linewidths=1.5)
            for a in (a0, a1, a2):
                a.set_xticks([])
                a.set_yticks([])
        axes[0, 0].set_ylabel("centre crop (model input)")
        axes[1, 0].set_ylabel("predicted lesion map\n(white: p = 0.5)")
        axes[2, 0].set_ylabel("ground-truth mask")
        fig.colorbar(hm, ax=axes[1, :], shrink=0.9, label="lesion probability", pad=0.01)
        fig.suptitle(f"Lesion maps of {name} on test images (7x7 map upsampled to 224x224)")
    return fig


# ---------------------------------------------------------------- tables

def _model_row_values(mi: ModelInput, which: str) -> dict:
    res = mi.meta["metrics"][which]
    m = res["malignant"]
    one = lambda v: {"mean": v, "lo": float("nan"), "hi": float("nan")}  # noqa: E731
    return {"malignant_recall": one(m["recall"]), "malignant_mar": one(m["mar"]), "malignant_far": one(m["far"]),
            "malignant_precision": one(m["precision"]), "malignant_auc": one(res["malignant_auc"]),
            "accuracy": one(res["accuracy"]), "macro_f1": one(res["macro_f1"]), "test_loss": one(res["log_loss"]),
            "dice": one(res.get("segmentation", {}).get("dice", float("nan")))}


def _rows_for_tables(models: list[ModelInput], sweeps: list[SweepInput]) -> list[dict]:
    """Uniform rows: label, config, runs, values {metric: {mean, lo, hi}}, paper."""
    rows = []
    for sw in sweeps:
        for r in _full_rows(sw.data["summary"]):
            frac = "" if r["fraction"] == 1 else f" (fraction {r['fraction']:g})"
            rows.append({"label": r["name"] + frac, "source": f"sweep {sw.name}", "config": r["config"],
                         "runs": f"{len(r['seeds'])} seeds", "values": r,
                         "paper": paper_figures(paper_name(r["config"]))})
    for mi in models:
        pn = paper_name(mi.meta.get("config", {}))
        for which, tag in (("test_argmax", "argmax"), ("test_operating_point", "operating point")):
            if which not in mi.meta.get("metrics", {}):
                continue
            lab = f"{mi.name}, {tag}"
            if which == "test_operating_point":
                lab += f" p>={mi.meta['calibration']['malignant_threshold']:.3f}"
            rows.append({"label": lab, "source": f"model (= {pn})" if pn else "model", "config": mi.meta["config"],
                         "runs": f"1 split (seed {mi.meta['split']['seed']})", "values": _model_row_values(mi, which),
                         "paper": paper_figures(pn) if which == "test_argmax" else {}})
    return rows


def _order(rows):
    from .paper import PAPER

    order = {n: i for i, n in enumerate(PAPER)}
    return sorted(rows, key=lambda r: (r["source"].startswith("model"), order.get(
        str(r["config"].get("name", "")).split("+")[0], 99), r["label"]))


def table1(rows: list[dict]) -> Table:
    out = []
    for r in _order(rows):
        c, v, p = r["config"], r["values"], r["paper"]
        bal = c.get("balance", "none")
        out.append([r["label"], r["source"], c.get("lr"), c.get("batch"), c.get("epochs"),
                    "yes" if c.get("masks") else "no", bal if bal != "undersample" else f"undersample {c.get('per_class')}",
                    c.get("head"), r["runs"],
                    _mean_ci_text(v["malignant_recall"], scale=1, digits=2),
                    _num(p.get("malignant_accuracy"), 2) if p else "-",
                    _mean_ci_text(v["accuracy"]), _mean_ci_text(v["test_loss"], scale=1, digits=3, clip=(0, math.inf))])
    return Table("Table 1 - configurations and malignant accuracy (ours: mean [95 % CI] over seeds)",
                 ["model", "source", "lr", "batch", "epochs", "masks", "balance", "head", "runs",
                  "malignant accuracy (ours)", "malignant accuracy (paper)", "test accuracy %", "test loss"],
                 out, "Malignant accuracy = malignant recall, as Teachable Machine reports it. Test accuracy and loss "
                      "are over all three classes on the held-out 15 % split; the paper reports neither per model. "
                      "Intervals are Student-t 95 % over split seeds, clipped to the metric's range.")


def table2(rows: list[dict]) -> Table:
    out = []
    for r in _order(rows):
        v, p = r["values"], r["paper"]
        line = [r["label"], r["source"], r["runs"]]
        for k in RATE_KEYS:
            line += [_mean_ci_text(v[k]), _pct(p[k]) if k in p else "-"]
        line.append(_mean_ci_text(v["malignant_auc"], scale=1, digits=3))
        out.append(line)
    hdr = ["model", "source", "runs"]
    for k in ("recall", "MAR", "FAR", "precision"):
        hdr += [f"{k} % (ours)", f"{k} % (paper)"]
    hdr.append("AUC (ours)")
    return Table("Table 2 - malignant vs rest on the test split, % (ours: mean [95 % CI])", hdr, out,
                 "Recall = TP/(TP+FN), MAR = 1 - recall, FAR = FP/(FP+TN), precision = TP/(TP+FP); malignant is "
                 "positive, benign+normal negative. The paper's figures come from one split; its MAR is 100 - recall.")


def fraction_table(sw: SweepInput) -> Table | None:
    summ = sw.data["summary"]
    if len({r["fraction"] for r in summ}) < 2:
        return None
    n_img = {}
    for r in sw.data["results"]:
        n_img.setdefault((r["config"]["name"], r["fraction"]), []).append(r.get("n_train_images", float("nan")))
    has_dice = any(not _nan(r["dice"]["mean"]) for r in summ)
    out = []
    for r in sorted(summ, key=lambda r: (r["name"], -r["fraction"])):
        n = n_img.get((r["name"], r["fraction"]), [])
        line = [r["name"], f"{r['fraction']:g}", _num(float(np.mean(n)), 0) if n else "-", len(r["seeds"]),
                _mean_ci_text(r["malignant_recall"]), _mean_ci_text(r["malignant_far"]),
                _mean_ci_text(r["malignant_precision"]), _mean_ci_text(r["malignant_auc"], scale=1, digits=3),
                _mean_ci_text(r["accuracy"])]
        if has_dice:
            line.append(_mean_ci_text(r["dice"], scale=1, digits=3))
        out.append(line)
    hdr = ["model", "fraction", "training images", "seeds", "recall %", "FAR %", "precision %", "AUC", "accuracy %"]
    if has_dice:
        hdr.append("Dice")
    return Table(f"Dataset-size sensitivity (sweep {sw.name}): stratified fraction of each split's training images",
                 hdr, out, "The test split is the same 15 % for every fraction of a seed; mean [95 % CI] over seeds.")


def segmentation_table(models: list[ModelInput], sweeps: list[SweepInput]) -> Table | None:
    out = []
    for mi in models:
        seg = mi.meta.get("metrics", {}).get("test_argmax", {}).get("segmentation")
        if seg:
            cal = mi.meta.get("calibration", {})
            out.append([mi.name, f"1 split (seed {mi.meta['split']['seed']})", _num(seg["dice"]), _num(seg["iou"]),
                        seg["n"], _num(cal.get("lesion_threshold")), _num(cal.get("lesion_oof_balanced_accuracy"))])
    for sw in sweeps:
        for r in _full_rows(sw.data["summary"]):
            if not _nan(r["dice"]["mean"]):
                out.append([f"{r['name']} (sweep {sw.name})", f"{len(r['seeds'])} seeds",
                            _mean_ci_text(r["dice"], scale=1, digits=3), "-", "-", "-", "-"])
    if not out:
        return None
    return Table("Multi-task head: lesion map vs ground-truth masks (test images with a mask)",
                 ["model", "runs", "Dice", "IoU", "test images", "lesion threshold", "OOF balanced accuracy"], out,
                 "The 7x7 lesion map is upsampled bilinearly to the 224x224 centre crop and thresholded at 0.5. The lesion "
                 "threshold (peak cell, for the mismatch flag) was chosen on out-of-fold training predictions.")


def flags_tables(runs: list[dict]) -> tuple[list[Table], list[str]]:
    tables, text = [], []
    for res in runs:
        t = res.get("thresholds", {})
        text.append(f"Model {res.get('model')} on {res.get('n')} held-out test images (split {res.get('split_digest')}): "
                    f"argmax accuracy {_num(res.get('accuracy'))}, {res.get('n_errors')} errors; missed malignant "
                    f"{res.get('n_missed_malignant_argmax')} at argmax, {res.get('n_missed_malignant_op')} at the "
                    f"operating point. Thresholds: low confidence {_num(t.get('low_confidence'))}, lesion "
                    f"{_num(t.get('lesion_threshold'))}, OOD {_num(t.get('ood_threshold'))}.")
        out = []
        items = list(res["flags"].items()) + [("ANY FLAG", dict(status="active", **res["any_flag"]))]
        for name, s in items:
            if s.get("status") != "active":
                out.append([name, s.get("status", "").replace("_", " ")] + ["-"] * 7)
                continue
            ratio = s["share_of_errors"] / s["share_of_images"] if s["share_of_images"] else float("nan")
            out.append([name, "active", f"{s['n_flagged']} ({_pct(s['share_of_images'])} %)",
                        f"{s['errors_flagged']} ({_pct(s['share_of_errors'])} %)",
                        f"{s['missed_malignant_argmax_flagged']}/{res.get('n_missed_malignant_argmax')}",
                        f"{s['missed_malignant_op_flagged']}/{res.get('n_missed_malignant_op')}",
                        _num(s["accuracy_flagged"]), _num(s["accuracy_unflagged"]), _num(ratio, 2)])
        tables.append(Table(f"Safety flags' evidence - {res.get('model')}",
                            ["flag", "status", "flagged images", "errors among them", "missed malignant (argmax)",
                             "missed malignant (op. point)", "accuracy flagged", "accuracy unflagged",
                             "error share / image share"], out,
                            "A ratio > 1 means the flag concentrates errors."
                            + (f" Pixel checks: {res['pixel_checks']}." if res.get("pixel_checks") else "")))
    return tables, text


# ---------------------------------------------------------------- reproduction

def selection_table(mi: ModelInput) -> Table | None:
    sel = mi.meta.get("selection") or {}
    ranking = [r for r in sel.get("ranking") or [] if isinstance(r, dict)]
    if not ranking:
        return None
    keys = list(ranking[0])
    rows = [[_num(r.get(k)) if isinstance(r.get(k), float) else r.get(k, "-") for k in keys] for r in ranking]
    return Table(f"Model selection of {mi.name} (training split only; the chosen one is first)",
                 [k.replace("_", " ") for k in keys], rows, str(sel.get("criterion", "")))


def train_command(mi: ModelInput, cache: str) -> str:
    c, cal = mi.meta.get("config", {}), mi.meta.get("calibration", {})
    sel = mi.meta.get("selection") or {}
    if sel.get("ranking"):
        from .paper import PAPER

        names = [r.get("name", "") for r in sel["ranking"]]
        heads = sorted({n.split("+")[1] if "+" in n else "plain" for n in names})
        bases = sorted({n.split("+")[0] for n in names})
        args = ["busi-lite", "select", "--cache", cache, "--heads", ",".join(heads)]
        if bases != sorted(PAPER):
            args += ["--only", ",".join(bases)]
        cap = re.search(r"FAR <= ([0-9.eE+-]+)", str(sel.get("criterion", "")))
        if cap:
            args += ["--far-cap", cap.group(1)]
        args += ["--seed", str(sel.get("seed", mi.meta.get("split", {}).get("seed", 0))), "--out", str(mi.path)]
        return shlex.join(args)
    args = ["busi-lite", "train", "--cache", cache, "--lr", f"{c.get('lr'):g}", "--batch", str(c.get("batch")),
            "--epochs", str(c.get("epochs")), "--head", c.get("head", "plain")]
    if c.get("masks"):
        args += ["--masks"]
        if tuple(c.get("views", ())) != ("roi", "masked", "mask"):
            args += ["--views", ",".join(c["views"])]
    if c.get("balance", "none") != "none":
        args += ["--balance", "undersample=" + str(c.get("per_class")) if c["balance"] == "undersample" else c["balance"]]
    if c.get("head") == "mtl" and c.get("lam", 1.0) != 1.0:
        args += ["--lam", f"{c['lam']:g}"]
    if cal.get("target_recall", 0.95) != 0.95:
        args += ["--target-recall", f"{cal['target_recall']:g}"]
    args += ["--seed", str(mi.meta.get("split", {}).get("seed", 0)), "--name", str(c.get("name")),
             "--out", str(mi.path)]
    return shlex.join(args)


def sweep_command(sw: SweepInput, cache: str) -> str:
    from .paper import PAPER

    res = sw.data["results"]
    seeds = sorted({r["seed"] for r in res})
    names = sorted({r["config"]["name"] for r in res})
    heads = sorted({r["config"]["head"] for r in res})
    fracs = sorted({r["fraction"] for r in res}, reverse=True)
    args = ["busi-lite", "sweep", "--cache", cache, "--seeds", str(len(seeds))]
    if heads != ["plain"]:
        args += ["--heads", ",".join(heads)]
    bases = sorted({n.split("+")[0] for n in names})
    if bases != sorted(PAPER):
        args += ["--only", ",".join(bases)]
    if fracs != [1.0]:
        args += ["--fractions", ",".join(f"{f:g}" for f in fracs)]
    args += ["--out", str(sw.path.with_suffix(""))]
    note = "" if seeds == list(range(len(seeds))) else f"   # NB: the file holds seeds {seeds}"
    return shlex.join(args) + note


# ---------------------------------------------------------------- assembly

def _save(fig, out_dir: Path, name: str, caption: str) -> Figure:
    plt = _pyplot()
    path = out_dir / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return Figure(name, caption, path.read_bytes())


def build_report(out_dir, models=(), sweeps=(), cache=None, flags=None, curves=(), n_lesions: int = 6,
                 command: str | None = None, log=None) -> dict:
    """Write OUT/report.html, OUT/report.md and OUT/*.png. ``models``: ModelInput (or model stems),
    ``sweeps``: SweepInput (or sweep JSON paths), ``cache``: FeatureCache or path (lesion examples),
    ``flags``: evaluate-JSON path or list of its dicts, ``curves``: config names of the sweeps for
    Fig. 1-2 (default: the best by malignant recall and model-7pp). Returns the written paths."""
    log = log or (lambda m: None)
    _pyplot()  # fail early and clearly without matplotlib
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = [m if isinstance(m, ModelInput) else load_model_input(m) for m in models]
    sweeps = [s if isinstance(s, SweepInput) else load_sweep_input(s) for s in sweeps]
    flags_path = None
    if isinstance(flags, (str, Path)):
        flags_path, flags = Path(flags), load_flags_input(flags)
    flags = flags or []
    if cache is not None and not hasattr(cache, "spatial"):
        from .features import FeatureCache

        cache = FeatureCache(cache)
    if not (models or sweeps or flags):
        raise ReportError("nothing to report -> pass --model NAME, --sweep SWEEP.json and/or --flags-json FILE")
    sections, figures = [], []

    def fig(f, name, caption, sec):
        item = _save(f, out_dir, name, caption)
        figures.append(item)
        sec.items.append(item)
        log(f"figure {out_dir / name}")

    for w in curves:
        if sweeps and not any(curve_names(sw, [w]) for sw in sweeps):
            have = sorted({r["name"] for sw in sweeps for r in sw.data["summary"]})
            raise ReportError(f"--curves {w}: no such configuration in the sweep(s) (have {', '.join(have)})")
    # Fig. 1 / 2
    cv = [model_curves(mi) for mi in models if mi.meta.get("history", {}).get("train_acc")]
    for sw in sweeps:
        best = best_config(sw.data["summary"])
        for n in curve_names(sw, list(curves)):
            c = sweep_curves(sw, n)
            several = len({r["name"] for r in sw.data["summary"]}) > 1
            tags = (["best by recall"] if several and n == best else []) + (["paper's best"] if n.split("+")[0] == "model-7pp" else [])
            if tags:
                c["label"] = c["label"].replace("\n", f" - {', '.join(tags)}\n", 1)
            cv.append(c)
    if cv:
        sec = Section("Training curves (paper Fig. 1 and 2)", [
            "Train and test (= the held-out 15 % split, evaluated after every epoch; it never steers training) "
            "accuracy and cross-entropy per epoch. Sweep curves are the mean over split seeds with a 95 % band. "
            "Train accuracy/loss are averaged over the epoch's mini-batches."])
        fig(fig_curves(cv, "acc"), "fig1_accuracy.png", "Fig. 1 - accuracy per epoch, train and test", sec)
        fig(fig_curves(cv, "loss"), "fig2_loss.png", "Fig. 2 - loss per epoch, train and test", sec)
        sections.append(sec)

    # Tables 1 / 2
    rows = _rows_for_tables(models, sweeps)
    if rows:
        best = [f"{sw.name}: {best_config(sw.data['summary'])}" for sw in sweeps]
        sections.append(Section("Paper Tables 1 and 2 replicated",
                                [f"Best configuration by mean malignant recall: {'; '.join(best)}." if best else ""],
                                [table1(rows), table2(rows)]))

    # Fig. 3
    classes = list((models[0].meta.get("classes") if models else None) or ("normal", "benign", "malignant"))
    sec = Section("Confusion matrices (paper Fig. 3)", [
        "Rows: true class; columns: predicted class; each cell: count and % of its row."])
    for mi in models:
        mt = mi.meta.get("metrics", {})
        panels = [(f"{mi.name}: argmax", mt["test_argmax"]["confusion"])] if "test_argmax" in mt else []
        if "test_operating_point" in mt:
            t = mi.meta["calibration"]["malignant_threshold"]
            panels.append((f"{mi.name}: operating point\np(malignant) >= {t:.3f}", mt["test_operating_point"]["confusion"]))
        if panels:
            fig(fig_confusion(panels, mi.meta.get("classes", classes)), f"fig3_confusion_{_slug(mi.name)}.png",
                f"Fig. 3 - confusion matrix of {mi.name} on its test split ({mi.meta['split']['n_test']} images)", sec)
    for sw in sweeps:
        names = curve_names(sw, list(curves))
        panels = []
        for n in names:
            rs = [r for r in sw.data["results"] if r["config"]["name"] == n]
            frac = max(r["fraction"] for r in rs)
            rs = [r for r in rs if r["fraction"] == frac]
            panels.append((f"{n}: argmax, summed over\n{len(rs)} seeds' test splits",
                           np.sum([r["test"]["confusion"] for r in rs], axis=0)))
        if panels:
            fig(fig_confusion(panels, classes), f"fig3_confusion_sweep_{_slug(sw.name)}.png",
                f"Fig. 3 - confusion matrices of sweep {sw.name} (summed over seeds)", sec)
    if sec.items:
        sections.append(sec)

    # ROC
    with_pred = [mi for mi in models if mi.meta.get("test_predictions", {}).get("proba")]
    if with_pred:
        sec = Section("ROC curve, malignant vs rest", [
            "p(malignant) swept over the test split. Star: the operating point chosen on out-of-fold TRAINING "
            "predictions (target recall) and applied once to the test split; circle: argmax of the three classes."])
        fig(fig_roc(with_pred), "fig4_roc.png", "ROC of p(malignant), malignant vs rest, on the test split", sec)
        sections.append(sec)

    # dataset size
    for sw in sweeps:
        t = fraction_table(sw)
        if t is not None:
            sec = Section(f"Dataset-size sensitivity (sweep {sw.name})", [], [t])
            fig(fig_fractions(sw.data["summary"]), f"fig5_fraction_{_slug(sw.name)}.png",
                f"Test metrics against the share of training images used (sweep {sw.name})", sec)
            sections.append(sec)

    # segmentation
    st = segmentation_table(models, sweeps)
    mtl = [mi for mi in models if mi.model is not None and getattr(mi.model, "has_lesion_map", False)]
    if st is not None or mtl:
        sec = Section("Multi-task head: lesion maps", [], [st] if st is not None else [])
        for mi in mtl:
            if cache is None:
                sec.text.append(f"{mi.name}: pass --cache to show lesion maps of test images.")
                continue
            ex, note = lesion_examples(mi, cache, n_lesions)
            if note:
                sec.text.append(f"{mi.name}: {note}")
            if ex:
                fig(fig_lesions(mi.name, ex), f"fig6_lesions_{_slug(mi.name)}.png",
                    f"{len(ex)} test images of {mi.name}: centre crop, predicted lesion map, ground-truth mask", sec)
        sections.append(sec)

    # model selection (busi-lite select)
    sel = [t for t in (selection_table(mi) for mi in models) if t is not None]
    if sel:
        sections.append(Section("Model selection", [], sel))

    # flags
    if flags:
        tabs, text = flags_tables(flags)
        sections.append(Section("Safety flags: evidence on the test split", text, tabs))

    # reproduction
    cache_arg = str(cache.path) if cache is not None else (str(sweeps[0].data.get("cache")) if sweeps else "CACHE")
    if command is None:
        args = ["busi-lite", "report"]
        for mi in models:
            args += ["--model", str(mi.path)]
        for sw in sweeps:
            args += ["--sweep", str(sw.path)]
        if cache is not None:
            args += ["--cache", str(cache.path)]
        if flags_path:
            args += ["--flags-json", str(flags_path)]
        for c in curves:
            args += ["--curves", c]
        args += ["--out", str(out_dir)]
        command = shlex.join(args)
    steps = []
    root = (cache.attrs.get("dataset_root") if cache is not None else None) or "BUSI_ROOT"
    steps.append(shlex.join(["busi-lite", "extract", "--data", str(root), "--out", cache_arg]))
    steps += [train_command(mi, cache_arg) for mi in models]
    steps += [sweep_command(sw, cache_arg) for sw in sweeps]
    for res in flags:
        m = next((mi for mi in models if mi.meta.get("split", {}).get("digest") == res.get("split_digest")
                  and mi.meta.get("config", {}).get("name") == res.get("model")), None)
        steps.append(f"busi-lite evaluate --model {m.path if m else 'MODEL'} --cache {cache_arg} --json "
                     f"> {flags_path or 'FLAGS.json'}")
    steps.append(command)
    inputs = []
    for mi in models:
        for suf in (".npz", ".json"):
            p = mi.path.with_name(mi.path.name + suf)
            inputs.append([str(p), file_sha256(p), f"split {mi.meta['split'].get('digest')}, backbone "
                                                   f"{str(mi.meta.get('backbone_sha256'))[:12]}"])
    for sw in sweeps:
        inputs.append([str(sw.path), file_sha256(sw.path), f"backbone {str(sw.data.get('backbone_sha256'))[:12]}"])
    if flags_path:
        inputs.append([str(flags_path), file_sha256(flags_path), ""])
    if cache is not None:
        inputs.append([str(cache.path), file_sha256(cache.path), f"backbone {cache.backbone_sha256[:12]}, "
                                                                 f"{len(cache)} images"])
    from . import __version__

    import matplotlib

    meta = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "package_version": __version__,
            "matplotlib": matplotlib.__version__, "command": command, "steps": steps,
            "inputs": Table("Inputs", ["file", "SHA-256", "digests"], inputs)}
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    _write(html_path, render_html(sections, meta))
    _write(md_path, render_md(sections, meta))
    return {"html": html_path, "markdown": md_path, "figures": [out_dir / f.file for f in figures]}


def _write(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em;display:block;overflow-x:auto}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.note{font-size:.85em;color:#555;margin-top:-.5em}
footer{margin-top:3em;border-top:1px solid #ddd;font-size:.85em;color:#444}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.95em}
"""


def render_html(sections: list[Section], meta: dict) -> str:
    e, a = _text, html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>busi-lite report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>busi-lite report: breast-ultrasound triage, paper replication</h1>",
             f"<p>Generated {e(meta['generated'])} by busi-lite {e(meta['package_version'])}.</p>"]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts += [f"<p>{e(t)}</p>" for t in s.text if t]
        for it in s.items:
            if isinstance(it, Table):
                parts.append(it.html())
            else:
                b64 = base64.b64encode(it.png).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{a(it.caption)}">'
                             f'<figcaption>{e(it.caption)} (<a href="{a(it.file)}">{e(it.file)}</a>)</figcaption></figure>')
    parts.append("<footer><h2>Reproduce</h2><p>From the feature cache, this report is rebuilt by:</p>"
                 f"<pre>{e(meta['command'])}</pre><p>The whole pipeline (backbone pass, training, sweeps, report):</p>"
                 f"<pre>{e(chr(10).join(meta['steps']))}</pre>{meta['inputs'].html()}"
                 f"<p>busi-lite {e(meta['package_version'])}, matplotlib {e(meta['matplotlib'])}.</p></footer>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_md(sections: list[Section], meta: dict) -> str:
    lines = ["# busi-lite report: breast-ultrasound triage, paper replication", "",
             f"Generated {meta['generated']} by busi-lite {meta['package_version']}.", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for t in s.text:
            if t:
                lines += [t, ""]
        for it in s.items:
            lines += [it.md() if isinstance(it, Table) else f"![{it.caption}]({it.file})", ""]
    lines += ["## Reproduce", "", "From the feature cache, this report is rebuilt by:", "", "```", meta["command"], "```",
              "", "The whole pipeline (backbone pass, training, sweeps, report):", "", "```", *meta["steps"], "```", "",
              meta["inputs"].md(), "", f"busi-lite {meta['package_version']}, matplotlib {meta['matplotlib']}.", ""]
    return "\n".join(lines)


def duplicate_sheet(root, groups: list[list[str]], path, max_groups: int = 30, thumb: int = 128) -> Path:
    """Contact sheet PNG: one row per duplicate group (thumbnails captioned with their paths),
    so a person can check that the groups `data check` finds are real. Pillow only."""
    from PIL import Image, ImageDraw

    from .data import read_rgb

    groups = groups[:max_groups]
    cols = max((len(g) for g in groups), default=1)
    cap = 14
    sheet = Image.new("RGB", (cols * (thumb + 6) + 6, len(groups) * (thumb + cap + 8) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for r, g in enumerate(groups):
        labels = {p.split("/")[0] for p in g}
        y = 6 + r * (thumb + cap + 8)
        for c, rel in enumerate(g):
            im = Image.fromarray(read_rgb(Path(root) / rel))
            im.thumbnail((thumb, thumb))
            x = 6 + c * (thumb + 6)
            sheet.paste(im, (x, y))
            colour = "red" if len(labels) > 1 else "black"
            draw.text((x, y + thumb + 1), rel.split("/")[-1][:22], fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
