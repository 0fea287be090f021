"""Site training: a head trained on a new site's labelled cases,
alone or together with BUSI, and its cross-validated figures.

``site_cv(site, config, k, seed)``: group-aware k-fold over the site cache's images (the
cache's duplicate groups; BUS-BRA-dev has one image per patient). Each fold's head trains
on the other folds (with their flip / mask views as the config says) and predicts the held-out
fold, so every site image gets exactly one out-of-fold prediction; the figures are computed on
those: malignant AUC with a stratified bootstrap 95 % interval, recall and FAR at argmax.

``site_cv(..., busi=cache, busi_seed=s)``: the same folds, each fold's training set adding the
TRAINING images of BUSI's split ``s`` (never its test images). Classes are matched by name:
the head predicts BUSI's classes, the site's must be a subset of them. ``site_cases`` caps the
site images of each training fold (stratified, seeded) to mimic "N cases from the new site".
Per-site balance (``balance_sites``): sample weights scaled so both sites carry the same total
weight. The BUSI test split of seed ``s`` is also scored by one head trained on BUSI training
+ all (capped) site images, to show what the mix costs on BUSI.

The config's preprocessing must be each cache's (training.check_preprocess). Results are
:class:`SiteCV` records. Training only: serving never imports this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from busi_lite.common.errors import BusiError
from busi_lite.evaluation import metrics as M
from busi_lite.features.cache import FeatureCache
from busi_lite.heads import get_head
from busi_lite.io import data as D
from busi_lite.model.config import Config
from busi_lite.training.core import build_xy, make_head, predict_rows, training_rows

MALIGNANT = "malignant"


@dataclass
class SiteCV:
    """Cross-validated figures of site training (see module docstring). auc_lo/hi: bootstrap 95 %."""
    config: str
    mode: str                 # "site" | "busi+site"
    k: int
    seed: int
    n: int
    n_malignant: int
    auc: float
    auc_lo: float
    auc_hi: float
    recall: float             # at argmax (predicted class malignant)
    far: float
    fold_auc: list
    n_train_mean: float       # training images per fold (site + BUSI)
    site_cases: int | None = None
    balance_sites: bool = False
    busi_test_auc: float | None = None   # mixed mode: BUSI test split of busi_seed
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def cap_rows(cache: FeatureCache, rows, n: int | None, seed: int) -> np.ndarray:
    """At most ``n`` of ``rows``, stratified by class (proportional), seeded."""
    rows = np.asarray(rows)
    if n is None or n >= len(rows):
        return rows
    rng = np.random.default_rng([seed, 7])
    keep = []
    for c in np.unique(cache.labels[rows]):
        r = rows[cache.labels[rows] == c]
        keep.append(rng.permutation(r)[:max(1, round(n * len(r) / len(rows)))])
    return np.sort(np.concatenate(keep))


def _class_map(classes, into) -> np.ndarray:
    missing = [c for c in classes if c not in into]
    if missing:
        raise BusiError(f"site classes {missing} are not among BUSI's {list(into)}",
                        "give a site folder whose classes BUSI has (e.g. benign, malignant)", param="data")
    return np.array([list(into).index(c) for c in classes], dtype=np.int64)


def site_weights(ws, balance_sites: bool) -> np.ndarray:
    """Concatenated sample weights of several sites' samples (``ws``: one array each), mean 1;
    with ``balance_sites`` each site's weights are first scaled to the same total."""
    ws = [np.asarray(w, np.float64) for w in ws]
    if balance_sites and len(ws) > 1:
        ws = [w / w.sum() for w in ws]
    w = np.concatenate(ws)
    return (w / w.mean()).astype(np.float32)


def fit_on(parts, config: Config, classes, seed: int, balance_sites: bool, start=None):
    """Train one head on several caches' rows. parts = [(cache, rows)]; labels mapped by name
    into ``classes``. Per-site balance: each part's sample weights scaled to the same total.
    ``start``: a fitted head to start from, for heads that declare ``warm_start`` (else ignored)."""
    Xs, ys, ws, targets = [], [], [], []
    for cache, rows in parts:
        xy = build_xy(cache, rows, config, with_views=True)
        Xs.append(xy["X"])
        ys.append(_class_map(cache.classes, classes)[xy["y"]])
        ws.append(xy["sample_weight"].astype(np.float64))
        targets.append(xy["targets"])
    w = site_weights(ws, balance_sites)
    kw = {k: np.concatenate([t[k] for t in targets]) for k in targets[0]} if targets[0] else {}
    head = make_head(config, len(classes), seed, parts[0][0].spec.n_features)
    if start is not None and head.warm_start:
        kw["start"] = start
    hist = head.fit(np.concatenate(Xs), np.concatenate(ys), **config.params.fit_kwargs(), seed=seed,
                    sample_weight=w, **kw)
    return head, hist


def site_cv(site: FeatureCache, config: Config, k: int = 5, seed: int = 0, busi: FeatureCache | None = None,
            busi_seed: int = 0, site_cases: int | None = None, balance_sites: bool = True,
            n_resamples: int = 2000) -> SiteCV:
    """k-fold cross-validated site training (alone, or with BUSI's training split); see module doc."""
    if MALIGNANT not in site.classes:
        raise BusiError(f"site cache {site.path} has no '{MALIGNANT}' class", "give a labelled site folder",
                        param="data")
    classes = tuple(busi.classes) if busi is not None else tuple(site.classes)
    cmap = _class_map(site.classes, classes)
    mal = classes.index(MALIGNANT)
    rows = np.arange(len(site))
    fold = D.group_kfold(site.labels, site.groups, site.paths, k, seed)
    busi_rows = None
    if busi is not None:
        busi_rows = training_rows(busi, busi.split(busi_seed).train, config, busi_seed)
    p_mal = np.zeros(len(site))
    pred = np.zeros(len(site), np.int64)
    fold_auc, n_train = [], []
    y_mal = cmap[site.labels] == mal
    for f in range(k):
        tr, te = cap_rows(site, rows[fold != f], site_cases, seed + f), rows[fold == f]
        parts = [(site, tr)] + ([(busi, busi_rows)] if busi is not None else [])
        head, _ = fit_on(parts, config, classes, seed + 1000 * (f + 1), balance_sites)
        p = predict_rows(head, site, te, config).proba
        p_mal[te], pred[te] = p[:, mal], p.argmax(1)
        n_train.append(len(tr) + (len(busi_rows) if busi_rows is not None else 0))
        if y_mal[te].any() and not y_mal[te].all():
            fold_auc.append(float(M.roc_auc(y_mal[te], p_mal[te])))
    auc = float(M.roc_auc(y_mal, p_mal))
    lo, hi = M.bootstrap_auc_interval(y_mal, p_mal, n_resamples, seed)
    alert = pred == mal
    res = SiteCV(config=config.name, mode="busi+site" if busi is not None else "site", k=k, seed=seed, n=len(site),
                 n_malignant=int(y_mal.sum()), auc=auc, auc_lo=float(lo), auc_hi=float(hi),
                 recall=float(alert[y_mal].mean()), far=float(alert[~y_mal].mean()), fold_auc=fold_auc,
                 n_train_mean=float(np.mean(n_train)), site_cases=site_cases,
                 balance_sites=bool(balance_sites and busi is not None))
    if busi is not None:
        head, _ = fit_on([(site, cap_rows(site, rows, site_cases, seed)), (busi, busi_rows)], config, classes, seed,
                         balance_sites)
        te = busi.split(busi_seed).test
        pb = predict_rows(head, busi, te, config).proba
        yb = busi.labels[te] == list(busi.classes).index(MALIGNANT)
        res.busi_test_auc = float(M.roc_auc(yb, pb[:, mal]))
    if get_head(config.head).has_lesion_map:
        res.notes.append("lesion-map head: only its class output is scored here")
    return res
