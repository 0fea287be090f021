"""The CLI's human tables: ``evaluate`` (held-out split) and ``evaluate --data`` (a labelled folder)."""

from __future__ import annotations


def _pct(x) -> str:
    return "   -  " if x != x else f"{100 * x:5.1f}%"


def _n(x, fmt=".3f") -> str:
    return "-" if x is None or x != x else format(x, fmt)


def grid(heads: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text table: the first column left-aligned, the others right-aligned under their headers,
    each as wide as its widest cell; a row of two cells (a name and a note) runs on after the name."""
    widths = [max([len(h)] + [len(r[i]) for r in rows if len(r) == len(heads)]) for i, h in enumerate(heads)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(heads), "-" * len(line(heads))]
    out += [line(r) if len(r) == len(heads) else f"{r[0].ljust(widths[0])}  {r[1]}" for r in rows]
    return out


def evaluate_table(res) -> str:
    """Human table of a :class:`busi_lite.serving.flags.FlagEvidence` (``busi-lite evaluate``)."""
    t = res.thresholds
    lines = [f"model {res.model} on {res.n} held-out test images (split {res.split_digest}, cache {res.cache})",
             f"argmax accuracy {res.accuracy:.3f}; errors {res.n_errors}; missed malignant: "
             f"{res.n_missed_malignant_argmax} at argmax, {res.n_missed_malignant_op} at the operating point",
             f"thresholds: low_confidence {t['low_confidence']:.3f}, lesion {_n(t['lesion_threshold'])}, "
             f"ood {_n(t['ood_threshold'])}", ""]
    heads = ["flag", "flagged", "of images", "errors", "of errors", "missed mal. argmax", "share",
             "missed mal. op", "share", "acc flagged", "acc unflagged", "err/img"]
    rows = []
    for name, s in list(res.flags.items()) + [("ANY FLAG", res.any_flag)]:
        if not s.active:
            rows.append([name, s.status.replace("_", " ")])
            continue
        rows.append([name, str(s.n_flagged), _pct(s.share_of_images).strip(), str(s.errors_flagged),
                     _pct(s.share_of_errors).strip(),
                     f"{s.missed_malignant_argmax_flagged}/{res.n_missed_malignant_argmax}",
                     _pct(s.share_of_missed_malignant_argmax).strip(),
                     f"{s.missed_malignant_op_flagged}/{res.n_missed_malignant_op}",
                     _pct(s.share_of_missed_malignant_op).strip(), _n(s.accuracy_flagged),
                     _n(s.accuracy_unflagged), _n(s.error_ratio, ".2f")])
    lines += grid(heads, rows)
    a = res.any_flag
    more = a.share_of_errors == a.share_of_errors and a.share_of_errors >= 1.5 * a.share_of_images
    lines.append("")
    lines.append(f"flagged images are {_pct(a.share_of_images).strip()} of the test images but hold "
                 f"{_pct(a.share_of_errors).strip()} of the errors ({'clearly more' if more else 'NOT clearly more'}"
                 f" than their share of images); accuracy {_n(a.accuracy_flagged)} flagged vs "
                 f"{_n(a.accuracy_unflagged)} unflagged")
    op = res.operating_point
    if op["threshold"] is not None:
        lines.append(f"malignant operating point p >= {op['threshold']:.3f}: test recall {_n(op['recall'])}, "
                     f"FAR {_n(op['far'])}, precision {_n(op['precision'])} "
                     f"(TP {op['tp']} FN {op['fn']} FP {op['fp']} TN {op['tn']})")
    lines.append("(err/img = share of errors / share of images; > 1 means flags concentrate errors. "
                 "Pixel checks of unusual_input need image files and are not applied here.)")
    return "\n".join(lines)


def _rate(r) -> str:
    return "-" if r.value != r.value else f"{r.value:.3f} [{r.lo:.3f}, {r.hi:.3f}] ({r.k}/{r.n})"


def external_table(ev) -> str:
    """Human summary of a :class:`busi_lite.evaluation.external.ExternalEvaluation`."""
    counts = ", ".join(f"{c} {n}" for c, n in ev.counts.items())
    lines = [f"model {ev.model} on ALL {ev.n} images of {ev.data_root or ev.cache} ({counts}); cache {ev.cache}",
             (f"malignant vs the rest: AUC {ev.auc:.3f} [{ev.auc_lo:.3f}, {ev.auc_hi:.3f}] "
              f"(95 % {ev.auc_interval})"), ""]
    head = f"{'decision rule':32s} {'recall':>30s} {'FAR':>30s} {'precision':>30s}"
    lines += [head, "-" * len(head)]
    for name, op in (("argmax", ev.argmax), (f"operating point p >= {ev.operating_point.threshold:.4f}",
                                              ev.operating_point)):
        lines.append(f"{name:32s} {_rate(op.recall):>30s} {_rate(op.far):>30s} {_rate(op.precision):>30s}")
    lines.append("(intervals: Wilson 95 %)")
    lines += ["", "confusion (rows: folder class, columns: model's argmax)",
              f"{'':12s}" + "".join(f"{c:>11s}" for c in ev.model_classes)]
    for c, row in zip(ev.dataset_classes, ev.confusion):
        lines.append(f"{c:12s}" + "".join(f"{v:11d}" for v in row))
    lines += ["", "flags on all images:", evaluate_table(ev.flags).replace("held-out test images", "images")
              .replace("of the test images", "of the images")]
    lines += [f"note: {n}" for n in ev.notes]
    return "\n".join(lines)
