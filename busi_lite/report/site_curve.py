"""The site learning curve in the report (``site-cv --curve ... --out F`` writes F.json; ``report
--site-curve F.json`` shows it): a figure of AUC and recall/FAR against the number of site cases,
and a table. Input: the JSON of busi_lite.training.curve.SiteCurve."""

from __future__ import annotations

import json
from pathlib import Path

from busi_lite.report.figures import pyplot
from busi_lite.report.inputs import ReportError
from busi_lite.report.tables import Section, Table


def load_site_curve(path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable site-curve JSON ({e})",
                          "write it with busi-lite site-cv --curve ... --out NAME") from None
    if not isinstance(d, dict) or not isinstance(d.get("points"), list) or not d["points"]:
        raise ReportError(f"{path}: no learning-curve points", "write it with busi-lite site-cv --curve ... --out NAME")
    return d


def fig_site_curve(d: dict):
    """Two panels: AUC (95 % interval) and recall/FAR at the site-calibrated threshold, against
    the number of site cases each fold trained on, one line per mode."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, marker in (("whole", "o"), ("box", "s")):
        pts = [p for p in d["points"] if p["mode"] == mode]
        if not pts:
            continue
        x = [p["site_cases"] for p in pts]
        label = "whole image" if mode == "whole" else "lesion box"
        a.errorbar(x, [p["auc"] for p in pts], yerr=[[p["auc"] - p["auc_lo"] for p in pts],
                                                     [p["auc_hi"] - p["auc"] for p in pts]],
                   marker=marker, capsize=3, label=label)
        b.plot(x, [p["recall"] for p in pts], marker=marker, label=f"recall, {label}")
        b.plot(x, [p["far"] for p in pts], marker=marker, linestyle="--", label=f"FAR, {label}")
    sizes = sorted({p["site_cases"] for p in d["points"]})
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel("site cases each fold trained on")
        ax.grid(alpha=0.3)
        ax.legend()
    a.set_ylabel("out-of-fold AUC (95 % interval)")
    b.set_ylabel("recall / FAR")
    b.set_title(f"at the site-calibrated threshold (target recall {d['points'][0]['target_recall']:g})")
    b.set_ylim(0, 1.02)
    a.set_title("malignant vs benign, site's held-out cases")
    fig.tight_layout()
    return fig


def site_curve_section(d: dict, fig, name: str = "fig_site_curve.png") -> Section:
    rows = [[p["mode"], p["site_cases"], f"{p['auc']:.3f} [{p['auc_lo']:.3f}, {p['auc_hi']:.3f}]",
             f"{p['auc_seed_sd']:.3f}", f"{p['recall']:.3f} [{p['recall_lo']:.2f}, {p['recall_hi']:.2f}]",
             f"{p['far']:.3f} [{p['far_lo']:.2f}, {p['far_hi']:.2f}]"] for p in d["points"]]
    sec = Section("On another hospital: how many site cases?", [
        f"Site {d['site']}: group-aware {d['k']}-fold over every site image, each fold's model trained on at most "
        "the given number of the other folds' cases; the threshold is calibrated on those training cases only "
        f"({d['inner']}-fold inner), recall/FAR counted on the held-out fold. Figures on the site's own held-out "
        "cases: NOT zero-shot."],
        [Table("Learning curve", ["mode", "site cases", "AUC [95 %]", "seed sd", "recall [95 %]", "FAR [95 %]"],
               rows)])
    fig(fig_site_curve(d), name, "Out-of-fold AUC and recall/FAR against the number of site cases", sec)
    return sec
