"""The CLI's human tables: ``evaluate`` (held-out split) and ``evaluate --data`` (a labelled folder)."""

from __future__ import annotations


def _pct(x) -> str:
    return "   -  " if x != x else f"{100 * x:5.1f}%"


def _n(x, fmt=".3f") -> str:
    return "-" if x is None or x != x else format(x, fmt)


def evaluate_table(res) -> str:
    """Human table of a :class:`busi_lite.serving.flags.FlagEvidence` (``busi-lite evaluate``)."""
    t = res.thresholds
    lines = [f"model {res.model} on {res.n} held-out test images (split {res.split_digest}, cache {res.cache})",
             f"argmax accuracy {res.accuracy:.3f}; errors {res.n_errors}; missed malignant: "
             f"{res.n_missed_malignant_argmax} at argmax, {res.n_missed_malignant_op} at the operating point",
             f"thresholds: low_confidence {t['low_confidence']:.3f}, lesion {_n(t['lesion_threshold'])}, "
             f"ood {_n(t['ood_threshold'])}", ""]
    head = (f"{'flag':15s} {'images':>13s} {'errors':>13s} {'miss.mal argmax':>16s} {'miss.mal op':>13s} "
            f"{'acc flagged':>11s} {'acc unflagged':>13s} {'err/img':>7s}")
    lines += [head, "-" * len(head)]
    for name, s in list(res.flags.items()) + [("ANY FLAG", res.any_flag)]:
        if not s.active:
            lines.append(f"{name:15s} {s.status.replace('_', ' ')}")
            continue
        lines.append(
            f"{name:15s} {s.n_flagged:4d} {_pct(s.share_of_images):>8s} "
            f"{s.errors_flagged:4d} {_pct(s.share_of_errors):>8s} "
            f"{s.missed_malignant_argmax_flagged:4d}/{res.n_missed_malignant_argmax:<3d}"
            f"{_pct(s.share_of_missed_malignant_argmax):>8s} "
            f"{s.missed_malignant_op_flagged:2d}/{res.n_missed_malignant_op:<2d}{_pct(s.share_of_missed_malignant_op):>8s} "
            f"{_n(s.accuracy_flagged):>11s} {_n(s.accuracy_unflagged):>13s} {_n(s.error_ratio, '.2f'):>7s}")
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
