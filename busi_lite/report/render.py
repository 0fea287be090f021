"""Report assembly: :func:`build_report` turns :class:`ReportInputs` into
OUT/report.html (self-contained: figures as base64 data URIs), OUT/report.md (same
tables, figures linked) and OUT/*.png. Writes go through :mod:`busi_lite.common.atomic`.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import numpy as np

from busi_lite.common.atomic import write_text
from busi_lite.features.backbone import file_sha256
from busi_lite.report import figures as FG
from busi_lite.report.external import external_section
from busi_lite.report.site_curve import load_site_curve, site_curve_section
from busi_lite.report.inputs import (
    ExternalInput,
    ModelInput,
    ReportError,
    ReportInputs,
    SweepInput,
    load_external_input,
    load_flags_input,
    load_model_input,
    load_sweep_input,
)
from busi_lite.report.stats import bases, best_config, curve_names, model_curves, slug, sweep_curves
from busi_lite.report.tables import (
    Section,
    Table,
    cell_text,
    flags_tables,
    fraction_table,
    rows_for_tables,
    segmentation_table,
    selection_table,
    table1,
    table2,
)


def _load(inputs: ReportInputs) -> ReportInputs:
    """Load what is still a path; check there is something to report."""
    inputs.models = [m if isinstance(m, ModelInput) else load_model_input(m) for m in inputs.models]
    inputs.sweeps = [s if isinstance(s, SweepInput) else load_sweep_input(s) for s in inputs.sweeps]
    if isinstance(inputs.flags, (str, Path)):
        inputs.flags_path, inputs.flags = Path(inputs.flags), load_flags_input(inputs.flags)
    inputs.flags = list(inputs.flags or [])
    inputs.externals = [x if isinstance(x, ExternalInput) else load_external_input(x) for x in inputs.externals]
    if inputs.cache is not None and not hasattr(inputs.cache, "spatial"):
        from busi_lite.features.cache import FeatureCache

        inputs.cache = FeatureCache(inputs.cache)
    if not (inputs.models or inputs.sweeps or inputs.flags or inputs.externals):
        raise ReportError("nothing to report",
                          "give trained models, sweep results, flag evidence and/or external evaluations")
    for w in inputs.curves:
        if inputs.sweeps and not any(curve_names(sw, [w]) for sw in inputs.sweeps):
            have = sorted({r["name"] for sw in inputs.sweeps for r in sw.data["summary"]})
            raise ReportError(f"curves {w}: no such configuration in the sweep(s) (have {', '.join(have)})",
                              "name one of those", param="curves")
    return inputs


def _sweep_picks(inputs: ReportInputs) -> list[tuple[SweepInput, list[str]]]:
    """Configs of each sweep shown in Fig. 1-3; runs already shown from an earlier sweep
    (same config, fraction and seeds, e.g. a fraction study repeating the plain sweep) are not repeated."""
    shown, out = set(), []
    for sw in inputs.sweeps:
        names = []
        for n in curve_names(sw, list(inputs.curves)):
            rs = [r for r in sw.data["summary"] if r["name"] == n]
            top = max(rs, key=lambda r: r["fraction"])
            key = (n, top["fraction"], tuple(sorted(top["seeds"])))
            if key not in shown:
                shown.add(key)
                names.append(n)
        out.append((sw, names))
    return out


def _curves_section(inputs, picks, fig) -> Section | None:
    hist = [(mi, (mi.meta.history or {}).get("train_acc") or []) for mi in inputs.models]  # history: plain JSON dict
    cv = [model_curves(mi) for mi, acc in hist if len(acc) >= 2]
    # e.g. the logistic-regression head: one solve, one point; an empty panel would say nothing
    single = [f"{mi.name} ({mi.meta.config.head} head: train accuracy {acc[-1]:.3f}, test "
              f"{(mi.meta.history.get('val_acc') or [float('nan')])[-1]:.3f})" for mi, acc in hist if len(acc) == 1]
    for sw, names in picks:
        best = best_config(sw.data["summary"])
        several = len({r["name"] for r in sw.data["summary"]}) > 1
        base = bases(sw.data["summary"])
        for n in names:
            c = sweep_curves(sw, n)
            tags = (["best by recall"] if several and n == best else []) + \
                (["paper's best"] if base.get(n) == "model-7pp" else [])
            if tags:
                c["label"] = c["label"].replace("\n", f" - {', '.join(tags)}\n", 1)
            cv.append(c)
    if not cv and not single:
        return None
    sec = Section("Training curves (paper Fig. 1 and 2)", [
        "Train and test (= the held-out 15 % split, evaluated after every epoch; it never steers training) "
        "accuracy and cross-entropy per epoch. Sweep curves are the mean over split seeds with a 95 % band. "
        "Train accuracy/loss are averaged over the epoch's mini-batches."])
    if single:
        sec.text.append("Not drawn (fitted in one solve, no epochs): " + "; ".join(single) + ".")
    if cv:
        fig(FG.fig_curves(cv, "acc"), "fig1_accuracy.png", "Fig. 1 - accuracy per epoch, train and test", sec)
        fig(FG.fig_curves(cv, "loss"), "fig2_loss.png", "Fig. 2 - loss per epoch, train and test", sec)
    return sec


def _confusion_section(inputs, picks, fig) -> Section | None:
    models = inputs.models
    classes = list(models[0].meta.classes if models else ("normal", "benign", "malignant"))
    sec = Section("Confusion matrices (paper Fig. 3)", [
        "Rows: true class; columns: predicted class; each cell: count and % of its row."])
    for mi in models:
        mt, t = mi.meta.metrics, mi.meta.calibration.malignant_threshold
        panels = [(f"{mi.name}: argmax", mt.test_argmax.confusion),
                  (f"{mi.name}: operating point\np(malignant) >= {t:.3f}", mt.test_operating_point.confusion)]
        fig(FG.fig_confusion(panels, mi.meta.classes), f"fig3_confusion_{slug(mi.name)}.png",
            f"Fig. 3 - confusion matrix of {mi.name} on its test split ({mi.meta.split.n_test} images)", sec)
    for sw, names in picks:
        panels = []
        for n in names:
            rs = [r for r in sw.data["results"] if r["config"]["name"] == n]
            frac = max(r["fraction"] for r in rs)
            rs = [r for r in rs if r["fraction"] == frac]
            panels.append((f"{n}: argmax, summed over\n{len(rs)} seeds' test splits",
                           np.sum([r["test"]["confusion"] for r in rs], axis=0)))
        if panels:
            fig(FG.fig_confusion(panels, classes), f"fig3_confusion_sweep_{slug(sw.name)}.png",
                f"Fig. 3 - confusion matrices of sweep {sw.name} (summed over seeds)", sec)
    return sec if sec.items else None


def _lesion_section(inputs, fig) -> Section | None:
    st = segmentation_table(inputs.models, inputs.sweeps)
    mtl = [mi for mi in inputs.models if mi.model is not None and getattr(mi.model, "has_lesion_map", False)]
    if st is None and not mtl and not (inputs.models or inputs.sweeps):
        return None
    sec = Section("Multi-task head: lesion maps", [], [st] if st is not None else [])
    if not mtl:  # say so rather than drop the figure silently
        sec.text.append("Fig. 6 (lesion maps of test images) is not drawn: no model with a lesion map was given. "
                        "Give --model of a multi-task model (trained with `busi-lite train --head mtl ...`) and "
                        "--cache (the feature cache it was trained on) to get it.")
    for mi in mtl:
        if inputs.cache is None:
            sec.text.append(f"{mi.name}: no feature cache given; lesion maps of test images need the cache "
                            "the model was trained on.")
            continue
        ex, note = FG.lesion_examples(mi, inputs.cache, inputs.n_lesions)
        if note:
            sec.text.append(f"{mi.name}: {note}")
        if ex:
            fig(FG.fig_lesions(mi.name, ex), f"fig6_lesions_{slug(mi.name)}.png",
                f"{len(ex)} test images of {mi.name}: centre crop, predicted lesion map, ground-truth mask", sec)
    return sec


def _inputs_table(inputs: ReportInputs) -> Table:
    rows = []
    for mi in inputs.models:
        for suf in (".npz", ".json"):
            p = mi.path.with_name(mi.path.name + suf)
            rows.append([str(p), file_sha256(p), f"split {mi.meta.split.digest}, backbone "
                                                 f"{mi.meta.backbone_sha256[:12]}"])
    for sw in inputs.sweeps:
        rows.append([str(sw.path), file_sha256(sw.path), f"backbone {str(sw.data.get('backbone_sha256'))[:12]}"])
    if inputs.flags_path:
        rows.append([str(inputs.flags_path), file_sha256(inputs.flags_path), ""])
    for xi in inputs.externals:
        rows.append([str(xi.path), file_sha256(xi.path), f"external evaluation of {xi.ev.model}, backbone "
                                                          f"{xi.ev.backbone_sha256[:12]}"])
    c = inputs.cache
    if c is not None:
        rows.append([str(c.path), file_sha256(c.path), f"backbone {c.backbone_sha256[:12]}, {len(c)} images"])
    return Table("Inputs", ["file", "SHA-256", "digests"], rows)


def _has_proba(mi: ModelInput) -> bool:
    return len(mi.meta.test_predictions.proba) > 0


def build_report(inputs: ReportInputs, log=None) -> dict:
    """Write OUT/report.html, OUT/report.md and OUT/*.png from ``inputs``.

    Returns {"html": path, "markdown": path, "figures": [paths]}. Raises ReportError
    for inputs that do not fit, before any file is written."""
    log = log or (lambda m: None)
    FG.pyplot()  # fail early and clearly without matplotlib
    inputs = _load(inputs)
    out_dir = inputs.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, figures = [], []

    def fig(f, name, caption, sec):
        item = FG.save(f, out_dir, name, caption)
        figures.append(item)
        sec.items.append(item)
        log(f"figure {out_dir / name}")

    picks = _sweep_picks(inputs)
    sections.append(_curves_section(inputs, picks, fig))
    rows = rows_for_tables(inputs.models, inputs.sweeps)
    if rows:
        best = [f"{sw.name}: {best_config(sw.data['summary'])}" for sw in inputs.sweeps]
        sections.append(Section("Paper Tables 1 and 2 replicated",
                                [f"Best configuration by mean malignant recall: {'; '.join(best)}." if best else ""],
                                [table1(rows), table2(rows)]))
    sections.append(_confusion_section(inputs, picks, fig))
    with_pred = [mi for mi in inputs.models if _has_proba(mi)]
    if with_pred:
        sec = Section("ROC curve, malignant vs rest", [
            "p(malignant) swept over the test split. Star: the operating point chosen on out-of-fold TRAINING "
            "predictions (target recall) and applied once to the test split; circle: argmax of the three classes."])
        fig(FG.fig_roc(with_pred), "fig4_roc.png", "ROC of p(malignant), malignant vs rest, on the test split", sec)
        sections.append(sec)
    for sw in inputs.sweeps:
        t = fraction_table(sw)
        if t is not None:
            sec = Section(f"Dataset-size sensitivity (sweep {sw.name})", [], [t])
            fig(FG.fig_fractions(sw.data["summary"]), f"fig5_fraction_{slug(sw.name)}.png",
                f"Test metrics against the share of training images used (sweep {sw.name})", sec)
            sections.append(sec)
    sections.append(_lesion_section(inputs, fig))
    sel = [t for t in (selection_table(mi) for mi in inputs.models) if t is not None]
    if sel:
        sections.append(Section("Model selection", [], sel))
    if inputs.flags:
        tabs, text = flags_tables(inputs.flags)
        sections.append(Section("Safety flags: evidence on the test split", text, tabs))
    for i, xi in enumerate(inputs.externals):
        cmd = inputs.external_commands[i] if i < len(inputs.external_commands) else None
        sections.append(external_section(xi, fig, cmd))
    for j, path in enumerate(inputs.site_curves):
        sections.append(site_curve_section(load_site_curve(path), fig, f"fig_site_curve_{j + 1}.png"))
    sections = [s for s in sections if s is not None]

    import matplotlib

    from busi_lite.common.constants import VERSION as __version__

    meta = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "package_version": __version__,
            "matplotlib": matplotlib.__version__, "command": inputs.command or "(built from Python: busi_lite.report.build_report)",
            "steps": list(inputs.steps) or ["(not recorded)"],
            "inputs": _inputs_table(inputs)}
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    write_text(html_path, render_html(sections, meta))
    write_text(md_path, render_md(sections, meta))
    return {"html": html_path, "markdown": md_path, "figures": [out_dir / f.file for f in figures]}


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
    e, a = cell_text, html.escape
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
