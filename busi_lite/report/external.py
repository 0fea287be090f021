"""Report section "Another hospital": a model evaluated on every image of another labelled
folder (:class:`busi_lite.evaluation.external.ExternalEvaluation`, from ``busi-lite evaluate --data DIR
--json``). Dataset, n per class, AUC with its bootstrap interval, recall/FAR/precision at
argmax and at the operating point with Wilson intervals, the confusion matrix (folder
classes x model classes), the flags' evidence, and a ROC figure when the record holds
per-image probabilities (``--per-image``); without them the section says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busi_lite.report import figures as FG
from busi_lite.report.inputs import ExternalInput
from busi_lite.report.stats import num_text, slug
from busi_lite.report.tables import Section, Table, flags_tables

MALIGNANT = "malignant"


def _rate(r) -> str:
    """'0.533 [0.457, 0.607] (88/165)' from an external.Rate; '-' when undefined."""
    if r.n == 0 or r.value != r.value:
        return f"- (0/{r.n})"
    return f"{r.value:.3f} [{r.lo:.3f}, {r.hi:.3f}] ({r.k}/{r.n})"


def roc_points(ev) -> tuple[np.ndarray, np.ndarray] | None:
    """(truly malignant [N] bool, p(malignant) [N]) from the record's per-image rows, or None."""
    if not ev.per_image or MALIGNANT not in ev.model_classes:
        return None
    y = np.array([r.true == MALIGNANT for r in ev.per_image], bool)
    p = np.array([r.proba[MALIGNANT] for r in ev.per_image], float)
    return y, p


def rates_table(ev, label: str) -> Table:
    op = ev.operating_point
    rows = [["argmax of the model's classes", _rate(ev.argmax.recall), _rate(ev.argmax.far),
             _rate(ev.argmax.precision)],
            [f"operating point p(malignant) >= {num_text(op.threshold, 4)}", _rate(op.recall), _rate(op.far),
             _rate(op.precision)]]
    return Table(f"Malignant vs the rest on {label}: recall, false alarm rate, precision",
                 ["decision rule", "recall", "FAR", "precision"], rows,
                 "Value [Wilson 95 % interval] (k/n). The operating point is the model's own (chosen on its "
                 "training data, BUSI), applied unchanged to this folder.")


def confusion_table(ev, label: str) -> Table:
    rows = []
    for c, row in zip(ev.dataset_classes, ev.confusion):
        tot = sum(row)
        rows.append([c, tot] + [f"{v} ({100 * v / tot:.1f} %)" if tot else str(v) for v in row])
    return Table(f"Confusion matrix on {label} (rows: folder class, columns: the model's argmax)",
                 ["true class", "images"] + [f"predicted {c}" for c in ev.model_classes], rows,
                 "Every model class is a column, so e.g. a 'normal' call on a folder with lesions only is counted, "
                 "not hidden.")


def external_section(xi: ExternalInput, fig, command: str | None = None) -> Section:
    """The section for one external evaluation; ``fig(figure, file, caption, section)`` saves figures."""
    ev = xi.ev
    label = Path(ev.data_root).name if ev.data_root else Path(ev.cache).stem
    counts = ", ".join(f"{c} {n}" for c, n in ev.counts.items())
    text = [f"Model {ev.model} evaluated on every image of {label} ({ev.data_root or 'folder not recorded'}; "
            f"feature cache {ev.cache}, preprocessing {ev.preprocess_version}, backbone "
            f"{ev.backbone_sha256[:12]}): {ev.n} images ({counts}). None of them was used to train or calibrate "
            "the model, so these figures are zero-shot on another site.",
            f"Malignant vs the rest: AUC {num_text(ev.auc)} [{num_text(ev.auc_lo)}, {num_text(ev.auc_hi)}] "
            f"(95 % interval: {ev.auc_interval})."]
    text += [f"Note: {n}" for n in ev.notes]
    sec = Section(f"Another hospital: {label}", text, [rates_table(ev, label), confusion_table(ev, label)])
    pts = roc_points(ev)
    if pts is None:
        sec.text.append(f"{xi.path} holds no per-image probabilities, so no ROC curve is drawn: write it with "
                        "`busi-lite evaluate ... --json --per-image` to get one.")
    else:
        y, p = pts
        fig(FG.fig_roc_points(y, p, ev.model, label, ev.argmax, ev.operating_point),
            f"fig7_roc_external_{slug(label)}.png",
            f"ROC of p(malignant), malignant vs the rest, on all {ev.n} images of {label} (model {ev.model})", sec)
    tabs, ftext = flags_tables([ev.flags], where=f"all {ev.n} images of {label}")
    sec.text += ftext
    sec.items += tabs
    if command:
        sec.text.append(f"Produced by: {command}")
    return sec
