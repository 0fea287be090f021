"""Report tables: Table 1-2 beside the paper's figures, dataset size, segmentation,
flag evidence, model selection; the Table / Figure / Section items rendered to HTML
and Markdown by :mod:`busi_lite.report.render`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np

from busi_lite.model.config import base_of, flat_view
from busi_lite.report.inputs import ModelInput, SweepInput
from busi_lite.report.stats import (
    RATE_KEYS,
    full_rows,
    is_nan,
    mean_ci_text,
    num_text,
    paper_figures,
    paper_name,
    pct_text,
)
from busi_lite.serving.flags import FlagEvidence

# ---------------------------------------------------------------- tables (rendered to HTML and Markdown)

def cell_text(x) -> str:
    """HTML-escape text content (quotes stay readable; attributes use html.escape)."""
    return html.escape(str(x), quote=False)


@dataclass
class Table:
    caption: str
    header: list
    rows: list
    note: str = ""

    def html(self) -> str:
        e = cell_text
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

# ---------------------------------------------------------------- tables

def _model_row_values(mi: ModelInput, which: str) -> dict:
    res = getattr(mi.meta.metrics, which)   # records.Metrics
    m = res.malignant                       # plain dict field: {recall, mar, far, precision, tp, ...}
    one = lambda v: {"mean": v, "lo": float("nan"), "hi": float("nan")}  # noqa: E731
    return {"malignant_recall": one(m["recall"]), "malignant_mar": one(m["mar"]), "malignant_far": one(m["far"]),
            "malignant_precision": one(m["precision"]), "malignant_auc": one(res.malignant_auc),
            "accuracy": one(res.accuracy), "macro_f1": one(res.macro_f1), "test_loss": one(res.log_loss),
            "dice": one((res.segmentation or {}).get("dice", float("nan")))}


def rows_for_tables(models: list[ModelInput], sweeps: list[SweepInput]) -> list[dict]:
    """Uniform rows: label, config (plain dict, as in sweep JSON), runs, values {metric: {mean, lo, hi}}, paper."""
    rows, seen = [], {}
    for sw in sweeps:
        for r in full_rows(sw.data["summary"]):
            key = (r["name"], r["fraction"], tuple(sorted(r["seeds"])))
            if key in seen:  # the same runs in another sweep (e.g. the fraction study): one row, both sources
                seen[key]["source"] += f" (= {sw.name})"
                continue
            frac = "" if r["fraction"] == 1 else f" (fraction {r['fraction']:g})"
            rows.append({"label": r["name"] + frac, "source": f"sweep {sw.name}", "config": r["config"],
                         "runs": f"{len(r['seeds'])} seeds", "values": r,
                         "paper": paper_figures(paper_name(r["config"]))})
            seen[key] = rows[-1]
    for mi in models:
        config = mi.meta.config.to_json()
        pn = paper_name(config)
        for which, tag in (("test_argmax", "argmax"), ("test_operating_point", "operating point")):
            lab = f"{mi.name}, {tag}"
            if which == "test_operating_point":
                lab += f" p>={mi.meta.calibration.malignant_threshold:.3f}"
            rows.append({"label": lab, "source": f"model (= {pn})" if pn else "model", "config": config,
                         "runs": f"1 split (seed {mi.meta.split.seed})", "values": _model_row_values(mi, which),
                         "paper": paper_figures(pn) if which == "test_argmax" else {}})
    return rows


def _order(rows):
    from busi_lite.common.paper import PAPER

    order = {n: i for i, n in enumerate(PAPER)}
    return sorted(rows, key=lambda r: (r["source"].startswith("model"), order.get(base_of(r["config"]), 99),
                                       r["label"]))


def table1(rows: list[dict]) -> Table:
    out = []
    for r in _order(rows):
        c, v, p = flat_view(r["config"]), r["values"], r["paper"]
        bal = c.get("balance", "none")
        out.append([r["label"], r["source"], c.get("lr"), c.get("batch"), c.get("epochs"),
                    "yes" if c.get("masks") else "no", bal if bal != "undersample" else f"undersample {c.get('per_class')}",
                    c.get("head"), r["runs"],
                    mean_ci_text(v["malignant_recall"], scale=1, digits=2),
                    num_text(p.get("malignant_accuracy"), 2) if p else "-",
                    mean_ci_text(v["accuracy"]), mean_ci_text(v["test_loss"], scale=1, digits=3, clip=(0, math.inf))])
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
            line += [mean_ci_text(v[k]), pct_text(p[k]) if k in p else "-"]
        line.append(mean_ci_text(v["malignant_auc"], scale=1, digits=3))
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
    has_dice = any(not is_nan(r["dice"]["mean"]) for r in summ)
    out = []
    for r in sorted(summ, key=lambda r: (r["name"], -r["fraction"])):
        n = n_img.get((r["name"], r["fraction"]), [])
        line = [r["name"], f"{r['fraction']:g}", num_text(float(np.mean(n)), 0) if n else "-", len(r["seeds"]),
                mean_ci_text(r["malignant_recall"]), mean_ci_text(r["malignant_far"]),
                mean_ci_text(r["malignant_precision"]), mean_ci_text(r["malignant_auc"], scale=1, digits=3),
                mean_ci_text(r["accuracy"])]
        if has_dice:
            line.append(mean_ci_text(r["dice"], scale=1, digits=3))
        out.append(line)
    hdr = ["model", "fraction", "training images", "seeds", "recall %", "FAR %", "precision %", "AUC", "accuracy %"]
    if has_dice:
        hdr.append("Dice")
    return Table(f"Dataset-size sensitivity (sweep {sw.name}): stratified fraction of each split's training images",
                 hdr, out, "The test split is the same 15 % for every fraction of a seed; mean [95 % CI] over seeds.")


def segmentation_table(models: list[ModelInput], sweeps: list[SweepInput]) -> Table | None:
    out = []
    for mi in models:
        seg = mi.meta.metrics.test_argmax.segmentation  # plain dict field {dice, iou, n} or None
        if seg:
            cal = mi.meta.calibration
            out.append([mi.name, f"1 split (seed {mi.meta.split.seed})", num_text(seg["dice"]), num_text(seg["iou"]),
                        seg["n"], num_text(cal.lesion_threshold), num_text(cal.lesion_oof_balanced_accuracy)])
    seen = set()
    for sw in sweeps:
        for r in full_rows(sw.data["summary"]):
            key = (r["name"], r["fraction"], tuple(sorted(r["seeds"])))
            if not is_nan(r["dice"]["mean"]) and key not in seen:
                seen.add(key)
                out.append([f"{r['name']} (sweep {sw.name})", f"{len(r['seeds'])} seeds",
                            mean_ci_text(r["dice"], scale=1, digits=3), "-", "-", "-", "-"])
    if not out:
        return None
    return Table("Multi-task head: lesion map vs ground-truth masks (test images with a mask)",
                 ["model", "runs", "Dice", "IoU", "test images", "lesion threshold", "OOF balanced accuracy"], out,
                 "The lesion map (a value per cell of the backbone's feature grid) is upsampled bilinearly to the network "
                 "input's centre crop and thresholded at 0.5. The lesion "
                 "threshold (peak cell, for the mismatch flag) was chosen on out-of-fold training predictions.")


def flags_tables(runs: list[FlagEvidence], where: str | None = None) -> tuple[list[Table], list[str]]:
    """Evidence table of each run; ``where``: the images it was measured on (default: the
    held-out test split named by the run's digest)."""
    tables, text = [], []
    for res in runs:
        t = res.thresholds
        on = where or f"{res.n} held-out test images (split {res.split_digest})"
        text.append(f"Flags of model {res.model} on {on}: "
                    f"argmax accuracy {num_text(res.accuracy)}, {res.n_errors} errors; missed malignant "
                    f"{res.n_missed_malignant_argmax} at argmax, {res.n_missed_malignant_op} at the "
                    f"operating point. Thresholds: low confidence {num_text(t.get('low_confidence'))}, lesion "
                    f"{num_text(t.get('lesion_threshold'))}, OOD {num_text(t.get('ood_threshold'))}.")
        out = []
        for name, s in list(res.flags.items()) + [("ANY FLAG", res.any_flag)]:
            if not s.active:
                out.append([name, s.status.replace("_", " ")] + ["-"] * 7)
                continue
            out.append([name, "active", f"{s.n_flagged} ({pct_text(s.share_of_images)} %)",
                        f"{s.errors_flagged} ({pct_text(s.share_of_errors)} %)",
                        f"{s.missed_malignant_argmax_flagged}/{res.n_missed_malignant_argmax}",
                        f"{s.missed_malignant_op_flagged}/{res.n_missed_malignant_op}",
                        num_text(s.accuracy_flagged), num_text(s.accuracy_unflagged), num_text(s.error_ratio, 2)])
        tables.append(Table(f"Safety flags' evidence - {res.model}",
                            ["flag", "status", "flagged images", "errors among them", "missed malignant (argmax)",
                             "missed malignant (op. point)", "accuracy flagged", "accuracy unflagged",
                             "error share / image share"], out,
                            "A ratio > 1 means the flag concentrates errors."
                            + (f" Pixel checks: {res.pixel_checks}." if res.pixel_checks else "")))
    return tables, text


# ---------------------------------------------------------------- model selection

SELECTION_COLUMNS = (("name", "config"), ("oof_recall_at_far", "OOF recall at FAR cap"), ("oof_auc", "OOF AUC"),
                     ("oof_accuracy", "OOF accuracy"), ("far_cap", "FAR cap"), ("n_params", "parameters"),
                     ("seconds", "seconds"))


def selection_table(mi: ModelInput) -> Table | None:
    """The ranking of ``busi-lite select`` (scalar columns only; the configs are in Table 1's terms)."""
    if isinstance(mi.meta, dict):  # raw card JSON (an older or hand-made card): read as a dict
        sel = mi.meta.get("selection") or {}
        ranking = [r for r in sel.get("ranking") or [] if isinstance(r, dict)]
        criterion = sel.get("criterion", "")
    else:  # card.ModelCard: selection is a records.SelectionResult of SelectionRow
        sel = mi.meta.selection
        ranking = [r.to_json() for r in sel.ranking] if sel is not None else []
        criterion = sel.criterion if sel is not None else ""
    if not ranking:
        return None
    cols = [(k, lab) for k, lab in SELECTION_COLUMNS if any(k in r for r in ranking)]

    def cell(k, v):
        if v is None or isinstance(v, float):
            return num_text(v, 1 if k == "seconds" else 3)
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
    rows = [[cell(k, r.get(k)) for k, _ in cols] for r in ranking]
    return Table(f"Model selection of {mi.name} (training split only; the chosen one is first)",
                 [lab for _, lab in cols], rows, str(criterion))
