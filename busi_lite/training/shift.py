"""Fitting the site-shift statistics of a model (busi_lite.model.shift): per training site,
the mean and within-class precision of its training images' coordinates, and the threshold
of the batch statistic, set on held-out images of that site (see model.shift for the test).

``fit_shift(ood, sites)``: ``sites`` = [(name, pooled [n,D], class names [n], groups [n])]
of the model's TRAINING images, per site. Thresholds: group-aware k-fold inside each site;
mean and precision fitted on the other folds, batches drawn from the held-out fold: mixed
batches of each size in ``batch_sizes`` (when the fold holds that many) and single-class
batches of the smallest size (a site too small for that: batches of a whole held-out fold of
at least MIN_HELD_OUT images, with fewer folds); the threshold is the ``quantile`` of them. The
projection basis is fitted once on all training images (the folds share it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from busi_lite.io import data as D
from busi_lite.model.model import Model
from busi_lite.model.shift import N_CAP, ShiftInfo, SiteShift
from busi_lite.serving.shift import batch_statistic, ood_coords

BATCH_SIZES = (20, 50)
QUANTILE = 0.99
DRAWS = 200   # batches per fold, size and kind
RIDGE = 1e-3
MIN_HELD_OUT = 10  # a small site: held-out batches of its whole fold (>= this many images) instead  # added to the covariance's diagonal (relative to its mean variance)


def class_free_basis(z: np.ndarray, labels) -> np.ndarray:
    """z [N,k], class names [N] -> [k,m] orthonormal basis of the complement of the
    between-class directions (the span of the class means around their mean)."""
    labels = np.asarray(labels)
    means = np.stack([z[labels == c].mean(axis=0) for c in np.unique(labels)])
    B = means - means.mean(axis=0)
    _, s, vt = np.linalg.svd(B, full_matrices=True)
    r = int((s > 1e-9 * max(float(s.max()), 1e-300)).sum()) if len(s) else 0
    return vt[r:].T


def site_moments(u: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """u [n,m] -> (mean [m], precision [m,m] of the within-class residuals, ridge-regularised)."""
    labels = np.asarray(labels)
    resid = u.copy()
    for c in np.unique(labels):
        resid[labels == c] -= u[labels == c].mean(axis=0)
    dof = max(len(u) - len(np.unique(labels)), 1)
    cov = resid.T @ resid / dof
    cov += RIDGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    return u.mean(axis=0), np.linalg.inv(cov)


def held_out_statistics(u, labels, groups, paths, seed: int, folds: int = 5, batch_sizes=BATCH_SIZES,
                        draws: int = DRAWS) -> np.ndarray:
    """Batch statistics of held-out images of one site (see module docstring)."""
    labels = np.asarray(labels)
    ids = np.unique(labels, return_inverse=True)[1]
    fold = D.group_kfold(ids, groups, paths, folds, seed)
    rng = np.random.default_rng([seed, 17])
    out = []
    for f in range(folds):
        te, tr = np.nonzero(fold == f)[0], np.nonzero(fold != f)[0]
        if len(te) < MIN_HELD_OUT or not len(tr):
            continue
        mean, prec = site_moments(u[tr], labels[tr])
        pools = [(te, n) for n in batch_sizes if n <= len(te)] or [(te, len(te))]
        pools += [(te[labels[te] == c], min(batch_sizes)) for c in np.unique(labels[te])
                  if (labels[te] == c).sum() >= min(batch_sizes)]
        for pool, n in pools:
            for _ in range(draws):
                out.append(batch_statistic(u[rng.choice(pool, n, replace=False)], mean, prec, N_CAP))
    return np.asarray(out)


def fit_shift(ood, sites, seed: int = 0, quantile: float = QUANTILE, batch_sizes=BATCH_SIZES,
              folds: int = 5) -> ShiftInfo | None:
    """ShiftInfo of a model with OOD statistics ``ood`` trained on ``sites`` (module docstring);
    None when no site holds enough images for a threshold."""
    z = [ood_coords(ood, X) for _, X, _, _ in sites]
    basis = class_free_basis(np.concatenate(z), np.concatenate([np.asarray(c) for _, _, c, _ in sites]))
    out, notes = [], []
    for (name, X, classes, groups), zs in zip(sites, z):
        u = zs @ basis
        classes = np.asarray(classes)
        mean, prec = site_moments(u, classes)
        paths = [f"{i:08d}" for i in range(len(u))]
        k = max(2, min(folds, len(u) // min(batch_sizes)))  # folds big enough for a batch when possible
        stats = held_out_statistics(u, classes, np.asarray(groups), paths, seed, k, batch_sizes)
        if not len(stats):
            notes.append(f"{name}: too few images for held-out batches of {min(batch_sizes)}; no threshold")
            continue
        thr = float(np.quantile(stats, quantile))
        out.append(SiteShift(name, len(u), mean.tolist(), prec.tolist(), thr, float((stats > thr).mean())))
    if not out:
        return None
    return ShiftInfo(basis.tolist(), out, float(quantile), [int(n) for n in batch_sizes], notes=notes)


def add_shift(model: Model, sites, seed: int = 0, **kw) -> Model:
    """A new Model: ``model`` with its card's ``shift`` section fitted on ``sites`` (see fit_shift)."""
    return Model(model.head, replace(model.card, shift=fit_shift(model.ood, sites, seed, **kw)), model.ood,
                 model.box_head)


def cache_site(name: str, cache, rows) -> tuple:
    """(name, pooled raw features, class names, groups) of ``rows`` of a feature cache."""
    rows = np.asarray(rows, np.int64)
    return (name, cache.pooled("raw", rows), np.asarray(cache.classes)[cache.labels[rows]], cache.groups[rows])


def site_name(cache) -> str:
    """A cache's site name: its dataset folder's name, else the cache file's stem."""
    root = str(cache.attrs.get("dataset_root") or "").rstrip("/")
    return root.rsplit("/", 1)[-1] if root else cache.path.stem
