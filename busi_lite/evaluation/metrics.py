"""Evaluation metrics for 3-class breast-ultrasound triage (NumPy only).

Classes: normal=0, benign=1, malignant=2. For the paper's safety metrics,
equations (1)-(4), malignant is the positive class and benign+normal the
negative class:

    Recall    = TP / (TP + FN)      (Teachable Machine's "malignant accuracy")
    MAR       = FN / (TP + FN)      (missed alarm rate = 1 - recall)
    FAR       = FP / (FP + TN)      (false alarm rate)
    Precision = TP / (TP + FP)

Undefined ratios (0/0) are ``float('nan')``; they never raise. Inputs are
validated at the boundary and bad inputs raise ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np

MALIGNANT = 2
_PROBA_ATOL = 1e-4

# Two-sided 95% Student-t critical values t_{0.975, df}; last entry is df=inf.
_T95_DF = np.array(list(range(1, 31)) + [40, 60, 120, np.inf], dtype=float)
_T95 = np.array([
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    2.0211, 2.0003, 1.9799, 1.9600,
])


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _ratio(num: float, den: float) -> float:
    """num / den as float, nan when den == 0."""
    return float(num) / float(den) if den else float("nan")


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    return int(n_classes)


def _labels(y, name: str, n_classes: int | None = None) -> np.ndarray:
    """Validate integer class labels -> int64 array [N]."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size:
        if np.issubdtype(a.dtype, np.floating):
            if not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
                raise ValueError(f"{name} must contain integer class labels")
        elif not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must contain integer class labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} has negative label {a.min()}")
    if n_classes is not None and a.size and a.max() >= n_classes:
        raise ValueError(f"{name} has label {a.max()} outside [0, {n_classes})")
    return a


def _pair(y_true, y_pred, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "y_true", n_classes)
    p = _labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred lengths differ: {t.size} vs {p.size}")
    return t, p


def _binary(y_bin) -> np.ndarray:
    """Validate binary labels (bool or 0/1) -> int64 array [N]."""
    a = np.asarray(y_bin)
    if a.dtype == bool:
        a = a.astype(np.int64)
    a = _labels(a, "y_bin")
    if a.size and a.max() > 1:
        raise ValueError("y_bin must contain only 0/1 (or bool) values")
    return a


def _scores(score, n: int) -> np.ndarray:
    """Validate finite 1-D scores of length n -> float64 array [N]."""
    s = np.asarray(score, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"score must be 1-D, got shape {s.shape}")
    if s.size != n:
        raise ValueError(f"y_bin and score lengths differ: {n} vs {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("score must be finite")
    return s


def _proba(proba) -> np.ndarray:
    """Validate class probabilities [N, C]: finite, in [0, 1], rows sum to ~1."""
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"proba must be 2-D [N, C], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1 + _PROBA_ATOL)):
        raise ValueError("proba must be finite and within [0, 1]")
    sums = p.sum(axis=1)
    if p.size and not np.allclose(sums, 1.0, atol=_PROBA_ATOL, rtol=0):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"proba rows must sum to 1 (row {bad} sums to {sums[bad]:.6f})")
    return p


# --------------------------------------------------------------------------- #
# classification metrics
# --------------------------------------------------------------------------- #
def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix.

    y_true, y_pred: int labels [N] in [0, n_classes).
    Returns int64 [C, C]; rows = true class, columns = predicted class.
    """
    c = _check_n_classes(n_classes)
    t, p = _pair(y_true, y_pred, c)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def malignant_metrics(y_true, y_pred, positive: int = MALIGNANT) -> dict:
    """One-vs-rest safety metrics, equations (1)-(4), with ``positive`` as positive.

    y_true, y_pred: int labels [N].
    Returns {recall, mar, far, precision} as floats (nan when 0/0) and
    {tp, fn, fp, tn} as ints.
    """
    t, p = _pair(y_true, y_pred)
    pos_t, pos_p = t == positive, p == positive
    tp = int(np.sum(pos_t & pos_p))
    fn = int(np.sum(pos_t & ~pos_p))
    fp = int(np.sum(~pos_t & pos_p))
    tn = int(np.sum(~pos_t & ~pos_p))
    return {
        "recall": _ratio(tp, tp + fn),
        "mar": _ratio(fn, tp + fn),
        "far": _ratio(fp, fp + tn),
        "precision": _ratio(tp, tp + fp),
        "tp": tp, "fn": fn, "fp": fp, "tn": tn,
    }


def accuracy(y_true, y_pred) -> float:
    """Fraction of y_pred [N] equal to y_true [N]; nan when N == 0."""
    t, p = _pair(y_true, y_pred)
    return _ratio(np.sum(t == p), t.size)


def per_class_recall(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Recall of each class, float [C]; nan for classes absent from y_true."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Unweighted mean of per-class F1 = 2TP / (2TP + FP + FN).

    Classes absent from both y_true and y_pred are left out of the mean
    (as sklearn does with default ``labels``); nan when no class is present.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2TP + FP + FN
    present = denom > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * tp[present] / denom[present]))


def log_loss(y_true, proba, eps: float = 1e-12) -> float:
    """Mean categorical cross-entropy -mean(log p[i, y_i]).

    y_true: int labels [N]; proba: [N, C] rows summing to 1.
    Probabilities are clipped to [eps, 1] before the log. nan when N == 0.
    """
    p = _proba(proba)
    t = _labels(y_true, "y_true", p.shape[1])
    if t.size != p.shape[0]:
        raise ValueError(f"y_true and proba lengths differ: {t.size} vs {p.shape[0]}")
    if t.size == 0:
        return float("nan")
    picked = np.clip(p[np.arange(t.size), t], eps, 1.0)
    return 0.0 - float(np.mean(np.log(picked)))  # 0.0 - avoids returning -0.0


# --------------------------------------------------------------------------- #
# ROC / thresholds
# --------------------------------------------------------------------------- #
def roc_curve(y_bin, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve, same as ``sklearn.metrics.roc_curve(drop_intermediate=False)``.

    y_bin: 0/1 labels [N]; score: finite scores [N] (higher = more positive).
    Returns fpr [K+1], tpr [K+1], thresholds [K+1] for the K distinct scores:
    thresholds are descending with thresholds[0] = +inf (fpr = tpr = 0 there);
    point i is the rate of ``score >= thresholds[i]``. fpr (tpr) is all nan
    when there are no negatives (positives).
    """
    y = _binary(y_bin)
    s = _scores(score, y.size)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], int)
    tps = np.r_[0, np.cumsum(y)[last]].astype(float)
    fps = np.r_[0, last + 1 - tps[1:]].astype(float)
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(y_bin, score) -> float:
    """ROC AUC as the Mann-Whitney statistic P(s_pos > s_neg) + 0.5 P(tie).

    y_bin: 0/1 labels [N]; score: finite scores [N].
    Returns nan when either class is absent.
    """
    y = _binary(y_bin)
    s = _scores(score, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def predict_labels(proba, malignant_threshold: float | None = None,
                   positive: int = MALIGNANT) -> np.ndarray:
    """Hard labels [N] (int64) from proba [N, C].

    Without a threshold: argmax. With a threshold t: ``positive`` where
    proba[:, positive] >= t, otherwise argmax over the remaining classes.
    """
    p = _proba(proba)
    if malignant_threshold is None:
        return np.argmax(p, axis=1).astype(np.int64)
    n_classes = p.shape[1]
    if not 0 <= positive < n_classes or n_classes < 2:
        raise ValueError(f"positive={positive} invalid for proba with {n_classes} classes")
    t = float(malignant_threshold)
    if math.isnan(t):
        raise ValueError("malignant_threshold is nan")
    others = p.copy()
    others[:, positive] = -np.inf
    labels = np.argmax(others, axis=1)
    labels[p[:, positive] >= t] = positive
    return labels.astype(np.int64)


def threshold_for_recall(y_bin, score, target: float = 0.95) -> float:
    """Highest threshold t with recall(score >= t) >= target.

    y_bin: 0/1 labels [N]; score: finite scores [N]; target in (0, 1].
    The answer is always one of the positives' scores: with the positives'
    scores sorted descending, it is the k-th one for the smallest k with
    k / P >= target. Any higher threshold gives recall < target.
    Returns nan when there are no positives (recall undefined).
    """
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    y = _binary(y_bin)
    s = _scores(score, y.size)
    pos = np.sort(s[y == 1])[::-1]
    if pos.size == 0:
        return float("nan")
    reached = np.arange(1, pos.size + 1) / pos.size >= target
    return float(pos[np.argmax(reached)])


Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion k / n (k successes of n trials).

    (nan, nan) when n == 0. Stays inside [0, 1] and is sensible at k = 0 or k = n.
    """
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if k > n:
        raise ValueError(f"k must be <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def bootstrap_auc_interval(y_bin, score, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the ROC AUC by a stratified bootstrap.

    y_bin: 0/1 labels [N]; score: finite scores [N]. Each of ``n_resamples``
    resamples draws the positives and the negatives with replacement separately
    (class counts fixed, so every resample has both classes), from
    ``np.random.default_rng(seed)``: positives first, then negatives.
    Returns (2.5th, 97.5th percentile); (nan, nan) when a class is absent.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    y = _binary(y_bin)
    s = _scores(score, y.size)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    lab = np.r_[np.ones(pos.size, np.int64), np.zeros(neg.size, np.int64)]
    aucs = np.empty(int(n_resamples))
    for b in range(int(n_resamples)):
        sp = pos[rng.integers(0, pos.size, pos.size)]
        sn = neg[rng.integers(0, neg.size, neg.size)]
        aucs[b] = roc_auc(lab, np.r_[sp, sn])
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- #
# segmentation, repeated runs, summary
# --------------------------------------------------------------------------- #
def dice_iou(pred, true) -> tuple[float, float]:
    """Dice and IoU of two boolean (or 0/1) masks of the same shape.

    Dice = 2|A∩B| / (|A| + |B|), IoU = |A∩B| / |A∪B|; both empty -> (1.0, 1.0).
    """
    a, b = np.asarray(pred), np.asarray(true)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    for name, m in (("pred", a), ("true", b)):
        if m.dtype != bool and not np.all((m == 0) | (m == 1)):
            raise ValueError(f"{name} mask must be boolean or 0/1")
    a, b = a.astype(bool), b.astype(bool)
    inter = int(np.sum(a & b))
    union = int(np.sum(a | b))
    if union == 0:
        return 1.0, 1.0
    return 2.0 * inter / (int(a.sum()) + int(b.sum())), inter / union


def t_critical_95(df: int) -> float:
    """Two-sided 95% t critical value for df >= 1 degrees of freedom; table lookup,
    interpolated linearly in 1/df (within 1e-4 relative of scipy's t.ppf(0.975, df))."""
    if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    return float(np.interp(1.0 / df, 1.0 / _T95_DF[::-1], _T95[::-1]))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over repeated runs.

    values: 1-D [R]; nan entries are ignored. Returns (mean, low, high) with
    half-width t_{df=n-1} * sd / sqrt(n) (sd with ddof=1). n == 1 ->
    (v, nan, nan); n == 0 -> (nan, nan, nan). Only confidence=0.95 is
    supported (table of t quantiles; no scipy).
    """
    if not math.isclose(float(confidence), 0.95, abs_tol=1e-9):
        raise ValueError(f"only confidence=0.95 is supported, got {confidence!r}")
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    v = v[~np.isnan(v)]
    nan = float("nan")
    if v.size == 0:
        return nan, nan, nan
    mean = float(v.mean())
    if v.size == 1:
        return mean, nan, nan
    half = t_critical_95(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def summarize(y_true, proba, class_names=("normal", "benign", "malignant"),
              malignant_threshold: float | None = None) -> dict:
    """JSON-able evaluation summary for y_true [N] and proba [N, C].

    Labels come from :func:`predict_labels` (argmax, or malignant threshold).
    Keys: n, accuracy, macro_f1, log_loss, per_class_recall {name: value},
    confusion (list of lists), malignant {recall, mar, far, precision, tp, fn,
    fp, tn}, malignant_auc, malignant_threshold. The malignant column is the class named
    "malignant" (index 2 when the names do not say: normal, benign, malignant).
    Undefined values are float nan.
    """
    p = _proba(proba)
    names = list(class_names)
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} class_names but proba has {p.shape[1]} columns")
    mal = names.index("malignant") if "malignant" in names else MALIGNANT
    if p.shape[1] <= mal:
        raise ValueError(f"proba needs a malignant column {mal}, got {p.shape[1]} columns")
    c = p.shape[1]
    t = _labels(y_true, "y_true", c)
    if t.size != p.shape[0]:
        raise ValueError(f"y_true and proba lengths differ: {t.size} vs {p.shape[0]}")
    pred = predict_labels(p, malignant_threshold, mal)
    recalls = per_class_recall(t, pred, c)
    return {
        "n": int(t.size),
        "accuracy": accuracy(t, pred),
        "macro_f1": macro_f1(t, pred, c),
        "log_loss": log_loss(t, p),
        "per_class_recall": {name: float(r) for name, r in zip(names, recalls)},
        "confusion": confusion_matrix(t, pred, c).tolist(),
        "malignant": malignant_metrics(t, pred, mal),
        "malignant_auc": roc_auc(t == mal, p[:, mal]),
        "malignant_threshold": None if malignant_threshold is None else float(malignant_threshold),
    }
