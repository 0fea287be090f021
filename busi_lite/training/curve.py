"""How many site cases are needed? A learning curve of site training (``site-cv --curve``).

For each number of site cases n (``sizes``; None = all) and each seed: group-aware k-fold over
ALL the site's images (fold seed = the seed). Each fold's model trains on at most n images of
the other folds (stratified, seeded; plus BUSI's training split when ``busi`` is given) and
predicts the held-out fold, so every site image gets one out-of-fold score from a model that
saw n site cases. The site-calibrated threshold of that fold is chosen for ``target_recall``
on inner out-of-fold scores of the same n training cases (``inner`` folds), never on the
held-out fold; recall and FAR are counted on the held-out images at that threshold.

Modes: ``whole`` (the config's head on the whole image; a benign/malignant head when no
training source has normal) and ``box`` (the lesion-box head on [whole image, true lesion
box], mirrored pair averaged; site images with box views only).

Figures per n (:class:`CurvePoint`): AUC = mean over seeds of the pooled out-of-fold AUC,
with the Hanley-McNeil 95 % interval of that AUC on the site's n_images (sampling
uncertainty of the held-out cases) and the spread over seeds (sd); recall/FAR at the
site-calibrated threshold (mean over seeds) with Wilson 95 % intervals on one seed's worth of counts
(the mean counts: every seed scores the same images, so pooling them would overstate the precision).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from busi_lite.common.errors import BusiError
from busi_lite.evaluation import metrics as M
from busi_lite.heads.box import DEFAULT_C
from busi_lite.io import data as D
from busi_lite.model.config import Config
from busi_lite.training.box import box_scores, fit_box_parts, lesion_rows
from busi_lite.training.core import hanley_mcneil, predict_rows, training_rows
from busi_lite.training.site import MALIGNANT, cap_rows, fit_on
from busi_lite.training.sources import model_classes

MODES = ("whole", "box")


@dataclass
class CurvePoint:
    mode: str
    site_cases: int            # site images each fold trained on (at most; "all" = the other folds)
    requested: int | None      # the size asked (None = all)
    n_images: int              # site images scored (each once per seed)
    n_malignant: int
    seeds: list
    auc: float
    auc_lo: float
    auc_hi: float
    auc_seed_sd: float
    recall: float
    recall_lo: float
    recall_hi: float
    far: float
    far_lo: float
    far_hi: float
    target_recall: float
    with_busi: bool

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SiteCurve:
    site: str
    k: int
    inner: int
    config: str
    points: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"site": self.site, "k": self.k, "inner": self.inner, "config": self.config,
                "points": [p.to_json() for p in self.points]}

    def sentence(self) -> str:
        """One plain sentence about the largest boxed (else whole-image) point reaching 100 cases or more."""
        pts = [p for p in self.points if p.mode == "box"] or self.points
        p = next((q for q in pts if q.site_cases >= 100), pts[-1])
        kind = "boxed cases" if p.mode == "box" else "cases (whole image)"
        return (f"with {p.site_cases} {kind}: AUC {p.auc:.2f} [{p.auc_lo:.2f}, {p.auc_hi:.2f}] on this site's "
                f"held-out cases; at the site-calibrated threshold recall {p.recall:.2f}, false alarms on "
                f"{100 * p.far:.0f} % of benign lesions.")


class _Scorer:
    """Fit on [(cache, rows)] and score site rows: p(malignant) [n] (whole image or box mode)."""

    def __init__(self, mode, config, classes, box_C, balanced):
        self.mode, self.config, self.classes, self.box_C, self.balanced = mode, config, classes, box_C, balanced

    def fit_score(self, parts, site, rows, seed):
        if self.mode == "box":
            head = fit_box_parts(parts, self.balanced, self.box_C)
            return box_scores(head, site, rows, "box", True)
        head, _ = fit_on(parts, self.config, self.classes, seed, self.balanced)
        return predict_rows(head, site, rows, self.config).proba[:, self.classes.index(MALIGNANT)]


def _threshold(scorer, site, rows, extra, y_of, inner, target, seed) -> float:
    """Threshold for ``target`` recall on inner out-of-fold scores of the training ``rows``."""
    fold = D.group_kfold(site.labels[rows], site.groups[rows], [site.paths[i] for i in rows], inner, seed)
    s = np.zeros(len(rows))
    for f in range(inner):
        if (fold == f).any() and (fold != f).any():
            s[fold == f] = scorer.fit_score([(site, rows[fold != f])] + extra, site, rows[fold == f], seed + 17 * f)
    return float(M.threshold_for_recall(y_of(rows), s, target))


def learning_curve(site, config: Config, sizes=(25, 50, 100, 200, None), seeds=(0, 1, 2), k: int = 5,
                   modes=MODES, busi=None, busi_seed: int = 0, target_recall: float = 0.90, inner: int = 3,
                   box_C: float = DEFAULT_C, balance_sites: bool = True, log=None) -> SiteCurve:
    """The learning curve of site training (module docstring). ``site``/``busi``: FeatureCaches."""
    log = log or (lambda m: None)
    if MALIGNANT not in site.classes:
        raise BusiError(f"site cache {site.path} has no '{MALIGNANT}' class", "give a labelled site dataset",
                        param="data")
    for m in modes:
        if m not in MODES:
            raise BusiError(f"unknown curve mode {m!r}", f"choose from {', '.join(MODES)}", param="modes")
    classes = model_classes([site] + ([busi] if busi is not None else []))
    out = SiteCurve(site=str(site.path), k=k, inner=inner, config=config.name)
    busi_rows = training_rows(busi, busi.split(busi_seed).train, config, busi_seed) if busi is not None else None
    mal = site.classes.index(MALIGNANT)

    def y_of(r):
        return site.labels[r] == mal

    for mode in modes:
        rows_all = lesion_rows(site, np.arange(len(site))) if mode == "box" else np.arange(len(site))
        extra_rows = None
        if busi is not None:
            extra_rows = lesion_rows(busi, busi_rows) if mode == "box" else busi_rows
        scorer = _Scorer(mode, config, classes, box_C, balance_sites)
        for n in sizes:
            aucs, hits, n_pos, alarms, n_neg, used = [], 0, 0, 0, 0, []
            for seed in seeds:
                fold = D.group_kfold(site.labels[rows_all], site.groups[rows_all],
                                     [site.paths[i] for i in rows_all], k, seed)
                score = np.zeros(len(rows_all))
                alert = np.zeros(len(rows_all), bool)
                for f in range(k):
                    te = rows_all[fold == f]
                    tr = cap_rows(site, rows_all[fold != f], n, seed * 100 + f)
                    used.append(len(tr))
                    extra = [(busi, extra_rows)] if busi is not None else []
                    s = scorer.fit_score([(site, tr)] + extra, site, te, seed * 100 + f)
                    thr = _threshold(scorer, site, tr, extra, y_of, inner, target_recall, seed * 100 + f)
                    score[fold == f], alert[fold == f] = s, s >= thr
                y = y_of(rows_all)
                aucs.append(M.roc_auc(y, score))
                hits, n_pos = hits + int(alert[y].sum()), n_pos + int(y.sum())
                alarms, n_neg = alarms + int(alert[~y].sum()), n_neg + int((~y).sum())
            y = y_of(rows_all)
            auc = float(np.mean(aucs))
            lo, hi = hanley_mcneil(auc, int(y.sum()), int((~y).sum()))
            r = len(seeds)  # the seeds score the same images: intervals from one seed's worth of counts
            rlo, rhi = M.wilson_interval(round(hits / r), round(n_pos / r))
            flo, fhi = M.wilson_interval(round(alarms / r), round(n_neg / r))
            p = CurvePoint(mode=mode, site_cases=int(round(np.mean(used))), requested=n, n_images=int(len(rows_all)),
                           n_malignant=int(y.sum()), seeds=list(seeds), auc=auc, auc_lo=lo, auc_hi=hi,
                           auc_seed_sd=float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                           recall=hits / max(n_pos, 1), recall_lo=rlo, recall_hi=rhi, far=alarms / max(n_neg, 1),
                           far_lo=flo, far_hi=fhi, target_recall=target_recall, with_busi=busi is not None)
            out.points.append(p)
            log(f"{mode} n={n if n else 'all'} ({p.site_cases} site cases a fold): AUC {auc:.3f} [{lo:.3f}, {hi:.3f}] "
                f"(seed sd {p.auc_seed_sd:.3f}); recall {p.recall:.3f} FAR {p.far:.3f}")
    return out

