"""Offline evaluation of the safety flags on a model's held-out test images.

Do the flags catch the errors? :func:`evaluate_flags` rebuilds the model's split
from its sidecar, predicts the test images' raw view from the feature cache, runs
the same :func:`busi_lite.serving.flags.compute_flags` that ``predict`` uses, and returns
a :class:`busi_lite.serving.flags.FlagEvidence`. Evaluation, not training: it imports
metrics and the cache, never the training code.
"""

from __future__ import annotations

import numpy as np

from busi_lite.evaluation import metrics as M
from busi_lite.serving.flags import FLAG_NAMES, FlagConfig, FlagEvidence, FlagStats, compute_flags, thresholds


def _share(num, den) -> float:
    return float(num / den) if den else float("nan")


def _stats(sel: np.ndarray, err: np.ndarray, miss: np.ndarray, miss_op: np.ndarray) -> FlagStats:
    """sel, err, miss, miss_op: [n] bool (flagged, wrong argmax, missed malignant at argmax / at the op. point)."""
    un = ~sel
    return FlagStats(
        n_flagged=int(sel.sum()), n_unflagged=int(un.sum()), share_of_images=_share(sel.sum(), len(sel)),
        accuracy_flagged=_share((~err & sel).sum(), sel.sum()),
        accuracy_unflagged=_share((~err & un).sum(), un.sum()),
        errors_flagged=int((err & sel).sum()), share_of_errors=_share((err & sel).sum(), err.sum()),
        missed_malignant_argmax_flagged=int((miss & sel).sum()),
        share_of_missed_malignant_argmax=_share((miss & sel).sum(), miss.sum()),
        missed_malignant_op_flagged=int((miss_op & sel).sum()),
        share_of_missed_malignant_op=_share((miss_op & sel).sum(), miss_op.sum()))


def flag_table(flags, checks, err, miss, miss_op) -> tuple[dict, FlagStats]:
    """Per-flag and any-flag statistics of flagged vs unflagged images.
    flags: per image list[Flag]; checks: per image {flag: state}; err, miss, miss_op: [n] bool."""
    per_flag = {}
    for name in FLAG_NAMES:
        states = {c[name] for c in checks}
        if states <= {"disabled", "not_applicable"}:
            per_flag[name] = FlagStats(status=states.pop() if states else "not_applicable")
            continue
        sel = np.array([any(f.name == name for f in fl) for fl in flags], dtype=bool)
        per_flag[name] = _stats(sel, err, miss, miss_op)
    any_sel = np.array([bool(fl) for fl in flags], dtype=bool)
    return per_flag, _stats(any_sel, err, miss, miss_op)


def evaluate_flags(model, cache, config: FlagConfig = FlagConfig(), threshold_malignant=None,
                   per_image: bool = True) -> FlagEvidence:
    """Flags on the model's held-out test images (raw view, from the cache).

    Refuses a cache that holds other images (split digest mismatch), other classes,
    or comes from another backbone. ``per_image``: keep each test image's label and flags.
    """
    from busi_lite.common.errors import ModelError
    from busi_lite.model.records import SplitMismatch

    model.check_backbone(cache.backbone_sha256, f"cache {cache.path}")
    if model.card is None:
        raise ModelError("the model has no card (no split)", "load a saved model or build it with fit_model")
    if tuple(cache.classes) != tuple(model.classes):
        raise ModelError(f"cache {cache.path} has classes {cache.classes}, the model {model.classes}",
                         "use the cache the model was trained on")
    try:  # the one split check (records.check_split)
        sp = model.card.split.check(cache, "the model")
    except SplitMismatch as e:
        raise ModelError(e.what, e.fix) from None
    digest = sp.digest(cache.paths)
    rows = sp.test
    y = cache.labels[rows]
    if model.flip and "flip" not in cache.views:  # flip averaging needs the mirrored inputs' features
        raise ModelError(f"the model averages each image with its mirror, cache {cache.path} has no 'flip' view",
                         "extract the features again with the flip view (the default views)")
    r = model.predict_features(cache.spatial("raw", rows), cache.spatial("flip", rows) if model.flip else None)
    proba = r["proba"]
    ood = model.ood.score(r["pooled"]) if model.ood is not None else None
    thr = thresholds(model, config)
    flags, checks = compute_flags(proba, r["lesion"], ood, model.classes, thr, config, pixel=None)
    t_mal = threshold_malignant if threshold_malignant is not None else model.card.calibration.malignant_threshold
    mal = model.classes.index("malignant")
    pred = proba.argmax(axis=1)
    pred_op = M.predict_labels(proba, t_mal, mal) if t_mal is not None else pred
    err = pred != y
    miss = (y == mal) & (pred != mal)
    miss_op = (y == mal) & (pred_op != mal)
    n = len(y)

    per_flag, any_flag = flag_table(flags, checks, err, miss, miss_op)
    op = M.malignant_metrics(y, pred_op, mal)
    return FlagEvidence(
        model=model.card.config.name, cache=str(cache.path), split_digest=digest,
        n=int(n), n_errors=int(err.sum()), accuracy=_share((~err).sum(), n),
        n_missed_malignant_argmax=int(miss.sum()), n_missed_malignant_op=int(miss_op.sum()),
        thresholds=dict(thr, malignant=None if t_mal is None else float(t_mal)),
        flags=per_flag, any_flag=any_flag,
        operating_point={"threshold": None if t_mal is None else float(t_mal), "recall": op["recall"],
                         "far": op["far"], "precision": op["precision"],
                         "tp": op["tp"], "fn": op["fn"], "fp": op["fp"], "tn": op["tn"]},
        per_image=[{"path": cache.paths[i], "y": model.classes[int(yy)], "pred": model.classes[int(pp)],
                    "flags": [f.name for f in fl]} for i, yy, pp, fl in zip(rows, y, pred, flags)]
        if per_image else None)
