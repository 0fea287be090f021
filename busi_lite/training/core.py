"""Training building blocks: the data of one run, training a head, predicting and scoring rows,
out-of-fold predictions and the thresholds calibrated on them.

Everything is read from a FeatureCache; the head class (busi_lite.heads registry, by
``config.head``) says which features it consumes and which extra targets it trains on,
so nothing here depends on a particular head kind. Only TRAINING rows are ever passed
to training and calibration; ``experiments`` composes these into runs, sweeps and models.

Preprocessing: a config's ``preprocess`` must be the cache's (check_preprocess, CacheError
otherwise): features of two preprocessings are never mixed. Flip averaging (config.flip):
training adds each training row's ``flip`` view as a sample of its label; evaluation
averages the probabilities (and lesion maps, mirrored back) of the raw and flip views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from busi_lite.common.errors import ConfigError
from busi_lite.evaluation import metrics as M
from busi_lite.features.cache import CacheError, FeatureCache
from busi_lite.features.preprocess import Preprocessing
from busi_lite.features.spec import DEFAULT
from busi_lite.heads import get_head
from busi_lite.io import data as D
from busi_lite.model.config import Config
from busi_lite.model.model import OOD, mirror_average
from busi_lite.model.records import Calibration, Metrics
from busi_lite.serving.geometry import upsample


class ClassMapped:
    """A FeatureCache seen with another class list: labels mapped BY NAME into ``classes``
    (the cache's classes must be a subset), everything else read through. Lets a site folder
    with benign/malignant only be trained with BUSI's classes (normal, benign, malignant), so
    the head, metrics and thresholds keep malignant at the same index; the head never sees a
    normal image then. Use :func:`with_classes`."""

    def __init__(self, cache: FeatureCache, classes):
        missing = [c for c in cache.classes if c not in classes]
        if missing:
            raise CacheError(f"{cache.path}: classes {missing} are not among {list(classes)}",
                             "train on a folder whose classes busi-lite predicts", param="cache")
        self._cache, self.classes = cache, tuple(classes)
        self.labels = np.array([self.classes.index(c) for c in cache.classes], np.int64)[cache.labels]
        self.source_classes = tuple(cache.classes)

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def __len__(self) -> int:
        return len(self._cache)

    def split(self, seed: int, test_fraction: float = 0.15) -> D.Split:
        return D.split(self.labels, self.groups, self.paths, seed, test_fraction)

    def close(self) -> None:
        self._cache.close()


def with_classes(cache: FeatureCache, classes):
    """``cache`` itself when it has exactly ``classes``, else a :class:`ClassMapped` view of it."""
    return cache if tuple(cache.classes) == tuple(classes) else ClassMapped(cache, classes)


def split_for(cache: FeatureCache, seed: int, test_fraction: float = 0.15) -> D.Split:
    return cache.split(seed, test_fraction)


def training_rows(cache: FeatureCache, rows, config: Config, seed: int, fraction: float = 1.0) -> np.ndarray:
    """Subset of ``rows`` used for training: a stratified ``fraction`` of the images, then
    (balance=undersample) at most ``per_class`` images a class; seeded."""
    rows = np.asarray(rows)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 1])
    keep = []
    for c in range(len(cache.classes)):
        r = rows[cache.labels[rows] == c]
        n = max(1, int(round(fraction * len(r)))) if len(r) else 0
        if config.balance == "undersample":
            n = min(n, config.per_class)
        keep.append(np.sort(rng.permutation(r)[:n]) if n < len(r) else r)
    return np.sort(np.concatenate(keep))


def check_preprocess(cache: FeatureCache, config: Config) -> None:
    """CacheError unless the cache was extracted with the config's preprocessing."""
    want = Preprocessing.named(config.preprocess).name
    got = cache.attrs.get("preprocess_version")
    if got != want:
        raise CacheError(f"cache {cache.path} was extracted with preprocessing {got!r}, config {config.name!r} asks "
                         f"{config.preprocess} ({want!r})",
                         f"extract the dataset again with preprocessing {config.preprocess} into another cache file, "
                         "and train on that cache", param="preprocess")


def whole_view(view: str) -> str:
    """The whole-image view that goes with a box view: its mirror for a ``*_flip`` view, else raw."""
    return "flip" if view.endswith("_flip") else "raw"


def _box_pair(cache, view, rows):
    if not str(view).startswith("box"):
        raise ConfigError(f"the box head reads box views (box, box_j0, box_flip, ...), not {view!r}",
                          "extract the box views and train it with busi-lite train-box", param="view")
    return np.concatenate([cache.pooled(whole_view(view), rows), cache.pooled(view, rows)], axis=1)


# what a head ``consumes`` -> how X of (view, rows) is read from a feature cache
CACHE_READS = {
    "pooled": lambda cache, view, rows: cache.pooled(view, rows),      # [n,D] float32
    "grid": lambda cache, view, rows: cache.spatial(view, rows),       # [n,G*G,D] float16
    "pooled+box": _box_pair,  # [n,2D]: the whole image's (raw, or flip for a *_flip box view), then the crop's
}
# what a head's ``targets`` name -> how it is read for (view, rows)
TARGET_READS = {"grid": lambda cache, view, rows: cache.grid(view, rows)}  # [n,G*G] lesion fraction per cell


def cache_inputs(head_cls, cache, view, rows) -> np.ndarray:
    """X of ``rows`` in ``view`` as ``head_cls.consumes`` declares it (CACHE_READS)."""
    read = CACHE_READS.get(head_cls.consumes)
    if read is None:
        raise ConfigError(f"{head_cls.__name__} consumes {head_cls.consumes!r}, which a feature cache does not hold",
                          f"declare consumes as one of {', '.join(CACHE_READS)}", param="head")
    return read(cache, view, rows)


def training_targets(head_cls, cache, parts) -> dict:
    """The fit() keywords ``head_cls.targets`` declares, for the samples of ``parts`` = [(view, rows), ...]."""
    return {name: np.concatenate([TARGET_READS[source](cache, v, r) for v, r in parts])
            for name, source in head_cls.targets.items()}


def build_xy(cache: FeatureCache, rows, config: Config, with_views: bool) -> dict:
    """Arrays for training or evaluation of ``rows``.

    X: what the head consumes (:func:`cache_inputs`): e.g. pooled [n,D] float32 or grid [n,G*G,D] float16.
    With views (training only): with config.flip each row's ``flip`` view, with config.masks
    each row's valid mask views, follow as extra samples of its label.
    Returns X, y, row (source image row of each sample), view, sample_weight, and
    targets (extra fit() keyword arguments the head declares, :func:`training_targets`, e.g. seg_target).
    """
    check_preprocess(cache, config)
    head_cls = get_head(config.head)
    rows = np.asarray(rows, dtype=np.int64)
    parts = [("raw", rows)]
    if with_views and config.flip:
        parts.append(("flip", rows))
    if with_views and config.masks:
        for v in config.views:
            parts.append((v, rows[cache.valid(v, rows)]))
    X = np.concatenate([cache_inputs(head_cls, cache, v, r) for v, r in parts])
    src = np.concatenate([r for _, r in parts])
    y = cache.labels[src]
    out = {"X": X, "y": y, "row": src, "view": np.concatenate([[v] * len(r) for v, r in parts]),
           "targets": training_targets(head_cls, cache, parts)}
    w = np.ones(len(y), np.float32)
    if config.balance == "weights":  # inverse class frequency, mean weight 1
        counts = np.bincount(y, minlength=len(cache.classes)).astype(np.float64)
        cw = np.where(counts > 0, len(y) / (len(counts) * np.maximum(counts, 1)), 0)
        w = cw[y].astype(np.float32)
    out["sample_weight"] = w
    return out


def make_head(config: Config, n_classes: int, seed: int, n_features: int = DEFAULT.n_features):
    """A fresh head of kind ``config.head`` on ``n_features`` features (the cache's backbone spec's)."""
    return get_head(config.head).build(config.params, n_features, n_classes, seed)


def train_head(cache: FeatureCache, rows, config: Config, seed: int, val_rows=None):
    """Train on ``rows`` (+ their flips / mask views per config). Returns (head, history)."""
    tr = build_xy(cache, rows, config, with_views=True)
    head = make_head(config, len(cache.classes), seed, cache.spec.n_features)
    kw = {}
    if val_rows is not None and len(val_rows):
        va = build_xy(cache, val_rows, config, with_views=False)
        kw = dict(X_val=va["X"], y_val=va["y"])
    hist = head.fit(tr["X"], tr["y"], **config.params.fit_kwargs(), seed=seed,
                    sample_weight=tr["sample_weight"], **tr["targets"], **kw)
    hist["n_train"] = len(tr["y"])
    return head, hist


@dataclass
class RowPredictions:
    """Raw-view predictions of some cache rows: proba [n,C], lesion [n,G*G] | None, y [n]."""
    proba: np.ndarray
    lesion: np.ndarray | None
    y: np.ndarray


def predict_rows(head, cache: FeatureCache, rows, config: Config) -> RowPredictions:
    """Raw-view predictions of ``rows``; with config.flip the mean of raw and flip views
    (lesion maps of the flip view mirrored back before averaging)."""
    xy = build_xy(cache, rows, config, with_views=False)
    out = head.predict(xy["X"])
    if not config.flip:
        return RowPredictions(out.proba, out.lesion, xy["y"])
    rows = np.asarray(rows, dtype=np.int64)
    avg = mirror_average(out, head.predict(cache_inputs(get_head(config.head), cache, "flip", rows)))
    return RowPredictions(avg.proba, avg.lesion, xy["y"])


def lesion_scores(lesion: np.ndarray, masks224: np.ndarray) -> dict:
    """Mean Dice/IoU of GxG lesion maps [n,G*G] (upsampled bilinearly to SxS, threshold 0.5)
    against the true masks [n,S,S] of the same crop -> {dice, iou, n}."""
    dice, iou = [], []
    for m, t in zip(lesion, masks224):
        g = math.isqrt(len(m))
        up = upsample(m.reshape(g, g), t.shape[0], t.shape[1]) >= 0.5
        d, j = M.dice_iou(up, t)
        dice.append(d)
        iou.append(j)
    return {"dice": float(np.mean(dice)) if dice else float("nan"),
            "iou": float(np.mean(iou)) if iou else float("nan"), "n": len(dice)}


def evaluate_rows(head, cache: FeatureCache, rows, config: Config, malignant_threshold=None,
                  pred: RowPredictions | None = None) -> Metrics:
    """Metrics of ``rows``; ``pred``: their predict_rows() output when already computed."""
    p = pred if pred is not None else predict_rows(head, cache, rows, config)
    res = M.summarize(p.y, p.proba, cache.classes, malignant_threshold=malignant_threshold)
    if p.lesion is not None:
        sel = cache.has_mask[rows]
        res["segmentation"] = lesion_scores(p.lesion[sel], cache.mask224(np.asarray(rows)[sel]))
    return Metrics.from_json(res)


# ---------------------------------------------------------------- calibration

def out_of_fold(cache: FeatureCache, rows, config: Config, seed: int, k: int = 5) -> dict:
    """Out-of-fold raw-view predictions on ``rows`` (group-aware k-fold inside them):
    proba [n,C], lesion [n,G*G] | None, ood score [n], y [n]. Only ``rows`` are touched."""
    rows = np.asarray(rows)
    fold = D.group_kfold(cache.labels[rows], cache.groups[rows], [cache.paths[i] for i in rows], k, seed)
    C = len(cache.classes)
    proba = np.zeros((len(rows), C), np.float32)
    lesion = np.zeros((len(rows), cache.spec.cells), np.float32) if get_head(config.head).has_lesion_map else None
    ood = np.zeros(len(rows))
    for f in range(k):
        tr, te = rows[fold != f], rows[fold == f]
        if len(te) == 0:
            continue
        head, _ = train_head(cache, tr, config, seed + 1000 * (f + 1))
        p = predict_rows(head, cache, te, config)
        proba[fold == f] = p.proba
        if lesion is not None:
            lesion[fold == f] = p.lesion
        ood[fold == f] = OOD.fit(cache.pooled("raw", tr)).score(cache.pooled("raw", te))
    return {"proba": proba, "lesion": lesion, "ood": ood, "y": cache.labels[rows]}


def calibrate(oof: dict, target_recall: float = 0.95, error_share: float = 0.5,
              ood_quantile: float = 0.99, mismatch_quantile: float = 0.05, malignant: int = 2,
              normal: int = 0) -> Calibration:
    """Thresholds chosen on out-of-fold training predictions only (``oof`` as out_of_fold returns).

    - malignant_threshold: highest p(malignant) threshold with OOF recall >= target_recall;
    - low_confidence: max-probability at or below which ``error_share`` of the OOF errors fall
      (the flag fires for conf <= threshold, so a constant-probability model is flagged);
    - lesion_threshold: max-cell lesion probability separating normal from lesion images
      (best balanced accuracy on OOF), for showing "lesion present";
    - lesion_absent / lesion_present: for the mismatch flag, only clear disagreement counts:
      a peak below the ``mismatch_quantile`` quantile of OOF peaks on lesion images means
      "no lesion", above the 1 - ``mismatch_quantile`` quantile on normal images "lesion";
    - ood_threshold: the ``ood_quantile`` quantile of OOF OOD scores.
    """
    y, proba = oof["y"], oof["proba"]
    thr = M.threshold_for_recall(y == malignant, proba[:, malignant], target_recall)
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    errors = conf[pred != y]
    low = float(np.quantile(errors, error_share)) if len(errors) else 0.0
    out = {"malignant_threshold": float(thr), "target_recall": target_recall,
           "oof_far_at_threshold": M.malignant_metrics(y, M.predict_labels(proba, thr, malignant), malignant)["far"],
           "low_confidence": low, "error_share": error_share,
           "ood_threshold": float(np.quantile(oof["ood"], ood_quantile)), "ood_quantile": ood_quantile}
    if oof.get("lesion") is not None:
        peak = oof["lesion"].max(axis=1)
        lesion_true = y != normal
        best = (0.5, -1.0)
        for t in np.unique(np.round(peak, 3)):
            ba = 0.5 * ((peak[lesion_true] >= t).mean() + (peak[~lesion_true] < t).mean())
            if ba > best[1]:
                best = (float(t), float(ba))
        out["lesion_threshold"], out["lesion_oof_balanced_accuracy"] = best
        out["lesion_absent"] = float(np.quantile(peak[lesion_true], mismatch_quantile))
        out["lesion_present"] = float(np.quantile(peak[~lesion_true], 1 - mismatch_quantile))
        out["mismatch_quantile"] = mismatch_quantile
    return Calibration(**out)


def recall_at_far(y_bin, score, far_cap: float) -> float:
    """Highest recall over thresholds whose false-alarm rate is <= far_cap."""
    fpr, tpr, _ = M.roc_curve(y_bin, score)
    ok = fpr <= far_cap
    return float(tpr[ok].max()) if ok.any() else 0.0


CHANCE_AUC = 0.55  # an out-of-fold malignant AUC at or below this (or an interval reaching 0.5) = at chance


def auc_interval(y_bin, score) -> tuple[float, float, float]:
    """(AUC, lo, hi): ROC AUC with a 95 % interval from the Hanley-McNeil (1982) standard error;
    (nan, nan, nan) when one class is missing."""
    y_bin = np.asarray(y_bin, bool)
    n1, n0 = int(y_bin.sum()), int((~y_bin).sum())
    if n1 == 0 or n0 == 0:
        return float("nan"), float("nan"), float("nan")
    a = M.roc_auc(y_bin, score)
    return (float(a), *hanley_mcneil(a, n1, n0))


def hanley_mcneil(a: float, n1: int, n0: int) -> tuple[float, float]:
    """95 % interval (lo, hi) of an AUC ``a`` measured on n1 positives and n0 negatives
    (Hanley-McNeil 1982 standard error), clipped to [0, 1]."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt(max(a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a), 0.0) / (n1 * n0))
    return float(max(a - 1.96 * se, 0.0)), float(min(a + 1.96 * se, 1.0))


def chance_warnings(oof: dict, malignant: int = 2) -> list[str]:
    """Loud caveats about out-of-fold predictions (``oof`` as out_of_fold returns):
    - collapsed: every class's probability nearly constant over the images (std < COLLAPSED_STD);
    - no information: the out-of-fold log-loss is not better than always answering the class
      frequencies by PRIOR_Z standard errors of the paired per-image difference (predictions
      unrelated to the labels pass this with probability ~0.1 %);
    - a malignant AUC at chance (<= CHANCE_AUC, undefined, or its 95 % interval reaching 0.5)."""
    y, proba = np.asarray(oof["y"]), np.asarray(oof["proba"], np.float64)
    out = []
    spread = float(proba.std(axis=0).max()) if len(proba) else 0.0
    if spread < COLLAPSED_STD:
        out.append(f"out-of-fold probabilities are nearly constant (largest std over images {spread:.2g}): "
                   "the training collapsed; do not use this model, retrain with a lower learning rate")
    gain, se = prior_gain(y, proba)
    if not gain > PRIOR_Z * se:
        out.append(f"out-of-fold log-loss gain over always answering the class frequencies is {gain:+.3f} "
                   f"nats/image (needs > {PRIOR_Z:g} x {se:.3f}): the model carries no information "
                   "about the labels; do not use it")
    auc, lo, hi = auc_interval(y == malignant, proba[:, malignant])
    if not np.isfinite(auc) or auc <= CHANCE_AUC or lo <= 0.5:
        out.append(f"out-of-fold malignant AUC {auc:.3f} [{lo:.3f}, {hi:.3f}] is at chance level: "
                   "this model does not separate malignant images; do not use it as a default")
    return out


COLLAPSED_STD = 0.01   # probabilities whose std over images stays below this for every class = collapsed
PRIOR_Z = 3.0          # standard errors by which the model's log-loss must beat the class frequencies'


def prior_gain(y, proba) -> tuple[float, float]:
    """(mean, standard error) of the per-image log-loss gain over the class-frequency answer:
    log p(y_i) - log prior(y_i). y [N] class indices, proba [N,C]."""
    y = np.asarray(y, int)
    if len(y) < 2:
        return float("nan"), float("nan")
    prior = np.bincount(y, minlength=proba.shape[1]) / len(y)
    d = np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)) - np.log(prior[y])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


MIN_OOD_IMAGES = 30   # fewer training images give OOD statistics too rough to judge an input by
OOD_FLOOR = 2e-6      # an OOD scale at or below this is OOD.fit's 1e-6 floor: no variance seen there


def ood_warning(ood, n_images: int) -> str | None:
    """A caveat for the card when the OOD statistics cannot support the unusual-input check."""
    at_floor = int((np.asarray(ood.scales) <= OOD_FLOOR).sum())
    if n_images >= MIN_OOD_IMAGES and not at_floor:
        return None
    return (f"OOD statistics come from {n_images} training images ({at_floor} of {len(ood.scales)} scales at "
            f"the {OOD_FLOOR:g} floor): the unusual-input check of this model is unreliable; train on at least "
            f"{MIN_OOD_IMAGES} images")
