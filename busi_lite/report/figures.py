"""Report figures (matplotlib, Agg backend, imported only here): training curves
(Fig. 1-2), confusion matrices (Fig. 3), ROC, dataset-size panels, lesion maps.

Each ``fig_*`` returns a matplotlib Figure; :func:`save` writes it as PNG atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from busi_lite.common.atomic import atomic_path
from busi_lite.report.inputs import ModelInput, ReportError

DPI = 130

def pyplot():
    """matplotlib.pyplot with the Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise ReportError("the report needs matplotlib", "pip install 'busi-lite[report]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
       "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12}

def _ncols(n: int) -> int:
    return n if n <= 3 else (2 if n == 4 else 3)


def fig_curves(curves: list[dict], kind: str):
    """kind 'acc' (Fig. 1) or 'loss' (Fig. 2): one panel per configuration, train and test."""
    plt = pyplot()
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
    plt = pyplot()
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
    from busi_lite.evaluation import metrics as M

    plt = pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 6.4 + 0.35 * 3 * len(models)), layout="constrained")
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
        for i, mi in enumerate(models):
            card = mi.meta
            y = np.asarray(card.test_predictions.y)
            mal = list(card.classes).index("malignant")
            score = np.asarray(card.test_predictions.proba, float)[:, mal]
            fpr, tpr, _ = M.roc_curve(y == mal, score)
            auc = M.roc_auc(y == mal, score)
            col = f"C{i}"
            ax.plot(fpr, tpr, color=col, lw=1.8, label=f"{mi.name} (AUC {auc:.3f})")
            am = card.metrics.test_argmax.malignant  # Metrics.malignant: a plain dict of rates
            ax.plot(am["far"], am["recall"], "o", ms=8, mfc="white", mec=col, mew=2,
                    label=f"{mi.name} argmax: recall {am['recall']:.2f}, FAR {am['far']:.2f}")
            op = card.metrics.test_operating_point.malignant
            t = card.calibration.malignant_threshold
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


def fig_roc_points(y_mal, score, model: str, label: str, argmax, op):
    """ROC of one model on another folder from per-image scores; y_mal [N] bool, score [N];
    ``argmax``/``op``: external.OperatingPoint drawn as circle / star."""
    from busi_lite.evaluation import metrics as M

    plt = pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 7.4), layout="constrained")
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
        fpr, tpr, _ = M.roc_curve(y_mal, score)
        ax.plot(fpr, tpr, color="C0", lw=1.8, label=f"{model} (AUC {M.roc_auc(y_mal, score):.3f})")
        ax.plot(argmax.far.value, argmax.recall.value, "o", ms=8, mfc="white", mec="C0", mew=2,
                label=f"argmax: recall {argmax.recall.value:.2f}, FAR {argmax.far.value:.2f}")
        ax.plot(op.far.value, op.recall.value, "*", ms=15, color="C0", mec="black", mew=0.6,
                label=f"operating point p>={op.threshold:.3f} (chosen on BUSI): recall {op.recall.value:.2f}, "
                      f"FAR {op.far.value:.2f}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false alarm rate (FPR): non-malignant called malignant")
        ax.set_ylabel("malignant recall (TPR)")
        ax.set_title(f"ROC, malignant vs the rest, all images of {label}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=9, frameon=False)
    return fig


# ---------------------------------------------------------------- dataset size

def fig_fractions(summary: list[dict]):
    plt = pyplot()
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
    the centre crop the model sees, the predicted GxG map upsampled, the true mask, Dice.
    Returns (examples, note)."""
    from busi_lite.common.errors import ImageError
    from busi_lite.evaluation import metrics as M
    from busi_lite.features.backbone import center_crop
    from busi_lite.io.imread import read_rgb
    from busi_lite.serving.geometry import upsample

    sp_meta = mi.meta.split
    if mi.meta.backbone_sha256 != cache.backbone_sha256:
        return [], f"cache {cache.path} comes from another backbone than {mi.name}; lesion examples skipped."
    sp = cache.split(int(sp_meta.seed), float(sp_meta.test_fraction))
    if sp_meta.digest and sp.digest(cache.paths) != sp_meta.digest:
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
    out, missing, spec = [], 0, cache.spec
    for i, row in enumerate(pick):
        pm = upsample(r["lesion"][i].reshape(spec.grid, spec.grid), spec.input_size, spec.input_size)
        d, j = M.dice_iou(pm >= 0.5, masks[i])
        try:
            rgb = read_rgb(root / cache.paths[row])
            from PIL import Image

            im = Image.fromarray(rgb)
            crop = np.asarray(center_crop(im, spec.input_size))
        except (ImageError, OSError):
            crop, missing = None, missing + 1
        out.append({"path": cache.paths[row], "label": cache.classes[cache.labels[row]],
                    "pred": mi.model.classes[int(np.argmax(r["proba"][i]))],
                    "p_malignant": float(r["proba"][i][list(mi.model.classes).index("malignant")]),
                    "image": crop, "pred_map": pm, "mask": masks[i], "dice": d, "iou": j, "grid": spec.grid})
    note = f"{missing} image file(s) not found under {root}; shown on a grey background." if missing else ""
    return out, note


def fig_lesions(name: str, ex: list[dict]):
    plt = pyplot()
    n = len(ex)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(3, n, figsize=(2.3 * n + 0.9, 7.6), squeeze=False, layout="constrained")
        hm = None
        for j, e in enumerate(ex):
            bg = e["image"] if e["image"] is not None else np.full(e["mask"].shape + (3,), 128, np.uint8)
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
        g, s = ex[0]["grid"], len(ex[0]["mask"])
        fig.suptitle(f"Lesion maps of {name} on test images ({g}x{g} map upsampled to {s}x{s})")
    return fig

def save(fig, out_dir: Path, name: str, caption: str):
    """Write ``fig`` as OUT_DIR/NAME (PNG, atomically), close it; -> tables.Figure with its bytes."""
    from busi_lite.report.tables import Figure

    plt = pyplot()
    path = Path(out_dir) / name
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return Figure(name, caption, path.read_bytes())
