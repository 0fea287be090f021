"""Training the lesion-box head (lesion-box mode) from a feature cache, and adding it to a model.

Data: the images WITH a lesion (classes benign and malignant; a normal image has no lesion
and no box) whose cache rows hold the box views (busi_lite.features.views, extracted with
``extract --views ...box...``). One sample = [whole-image pooled, lesion-crop pooled]:
    training:   crops of the JITTERED mask boxes box_j0, box_j1 (shift and scale up to 20 %,
                so a hand-drawn box works as well), each with its mirror (box_j0_flip with
                the mirrored whole image ``flip``); each image counts once (weights 1/views);
    evaluation: the true mask box ``box`` (averaged with ``box_flip`` when the head flips)
                and sloppy boxes box_s10/s20/s30 (jitter 10/20/30 %, no mirror).
Only TRAINING rows of the model's split are trained on; the malignant threshold of the box
head is chosen for ``target_recall`` on out-of-fold (group-aware k-fold) predictions of the
training images with the jittered box box_j0 (a hand-drawn-like box), never on test images.
Mirror at prediction (``flip="auto"``, a rule fixed in advance, on training data only): the
mirrored pair costs two more backbone passes per image, so it is used only when it raises the
out-of-fold AUC by at least MIRROR_GAIN.

:func:`add_box_head` returns a NEW Model (main head, OOD and card unchanged) with the box
head and its card section ``box`` (card.BoxInfo); ``busi-lite train-box`` calls it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from busi_lite.common.errors import BusiError, ModelError
from busi_lite.evaluation import metrics as M
from busi_lite.features.preprocess import BOX_MARGIN
from busi_lite.features.views import EVAL_BOX_VIEWS, TRAIN_BOX_VIEWS
from busi_lite.heads.box import CLASSES as BOX_CLASSES
from busi_lite.heads.box import DEFAULT_C, BoxHead
from busi_lite.io import data as D
from busi_lite.model.card import BoxInfo
from busi_lite.model.model import Model
from busi_lite.model.records import check_split
from busi_lite.training.core import cache_inputs
from busi_lite.training.site import site_weights

CALIBRATION_VIEW = "box_j0"
MIRROR_GAIN = 0.005  # OOF AUC gain that pays for the mirrored pair's two extra backbone passes


class BoxTrainingError(BusiError):
    """The box head cannot be trained on this cache: what -> fix."""


def lesion_rows(cache, rows) -> np.ndarray:
    """Rows (of ``rows``) of benign or malignant images whose cache row holds the box views."""
    rows = np.asarray(rows, np.int64)
    if "box" not in cache.views:
        raise BoxTrainingError(f"{cache.path}: the cache has no box views (has {', '.join(cache.views)})",
                               "extract the features again with the box views (the default views: flip, box, "
                               "box_flip, box_j0, box_j1, box_j0_flip, box_j1_flip, box_s10, box_s20, box_s30)",
                               param="cache")
    names = list(cache.classes)
    missing = [c for c in BOX_CLASSES if c not in names]
    if missing:
        raise BoxTrainingError(f"{cache.path}: classes {names} lack {missing}", "use a cache with benign and malignant")
    lab = cache.labels[rows]
    keep = np.isin(lab, [names.index(c) for c in BOX_CLASSES]) & cache.valid("box", rows)
    return rows[keep]


def box_y(cache, rows) -> np.ndarray:
    """1 for malignant, 0 for benign."""
    return (cache.labels[np.asarray(rows)] == list(cache.classes).index("malignant")).astype(np.int64)


def box_xy(cache, rows, views=TRAIN_BOX_VIEWS):
    """X [n*len(views), 2560], y, weights (1/len(views): each image counts once), source row per sample."""
    rows = np.asarray(rows, np.int64)
    X = np.concatenate([cache_inputs(BoxHead, cache, v, rows) for v in views])
    y = np.tile(box_y(cache, rows), len(views))
    return X, y, np.full(len(y), 1.0 / len(views)), np.tile(rows, len(views))


def fit_box_head(cache, rows, C: float = DEFAULT_C, views=TRAIN_BOX_VIEWS) -> BoxHead:
    """A BoxHead fitted on the lesion images among ``rows`` (training rows only); each image's
    samples weigh 1/len(views) in all (``per_image``)."""
    return fit_box_parts([(cache, lesion_rows(cache, rows))], C=C, views=views, per_image=True)


def _gather(parts, views):
    """[(X, y, w) of box_xy] per part, None for an empty part."""
    return [box_xy(cache, rows, views)[:3] if len(rows) else None for cache, rows in parts]


def _fit_gathered(data, balanced: bool, C: float, per_image: bool, start=None) -> BoxHead:
    """One BoxHead on gathered [(X, y, w) | None] (see fit_box_parts)."""
    data = [d for d in data if d is not None]
    X = np.concatenate([d[0] for d in data])
    w = site_weights([d[2] for d in data], balanced)
    if per_image:
        w = w * data[0][2][0]  # 1/len(views): each image's samples weigh 1 in all
    head = BoxHead(X.shape[1], C)
    head.fit(X, np.concatenate([d[1] for d in data]), sample_weight=w, start=start)
    return head


def fit_box_parts(parts, balanced: bool = True, C: float = DEFAULT_C, views=TRAIN_BOX_VIEWS,
                  per_image: bool = False) -> BoxHead:
    """One BoxHead on several sources' lesion rows. parts = [(cache, lesion rows)] (empty parts
    are skipped). Sample weights: mean 1 (``per_image``: mean 1/len(views), each image weighs 1);
    ``balanced``: each source's weights first scaled to the same total."""
    return _fit_gathered(_gather(parts, views), balanced, C, per_image)


def box_scores(head: BoxHead, cache, rows, view: str = "box", flip: bool = True) -> np.ndarray:
    """p(malignant) [n] of ``rows`` with box view ``view``; averaged with ``view_flip`` when
    ``flip`` and the cache holds it (sloppy views have no mirror)."""
    p = head.predict_proba(cache_inputs(BoxHead, cache, view, rows))[:, 1]
    if flip and f"{view}_flip" in cache.views:
        p = (p + head.predict_proba(cache_inputs(BoxHead, cache, f"{view}_flip", rows))[:, 1]) / 2
    return p


@dataclass
class BoxCalibration:
    """A box head fitted on all training lesion images and its out-of-fold calibration.
    y, mirrored, plain: [n] over the parts' rows in order (1 = malignant; OOF p(malignant)
    with the mirrored pair averaged in, and without)."""
    head: BoxHead
    y: np.ndarray
    mirrored: np.ndarray
    plain: np.ndarray
    flip: bool
    threshold: float
    target_recall: float
    views: tuple

    @property
    def oof(self) -> np.ndarray:
        return self.mirrored if self.flip else self.plain

    @property
    def auc_mirror(self) -> float:
        return float(M.roc_auc(self.y == 1, self.mirrored))

    @property
    def auc_no_mirror(self) -> float:
        return float(M.roc_auc(self.y == 1, self.plain))

    @property
    def oof_auc(self) -> float:
        return self.auc_mirror if self.flip else self.auc_no_mirror

    @property
    def recall(self) -> float:
        return float((self.oof[self.y == 1] >= self.threshold).mean())

    @property
    def far(self) -> float:
        neg = self.oof[self.y == 0]
        return float((neg >= self.threshold).mean()) if len(neg) else float("nan")

    def info(self, test_auc: dict, n_test: int) -> BoxInfo:
        """The card's ``box`` section, with the held-out figures ``test_auc`` on ``n_test`` lesions."""
        n = int(len(self.y))
        return BoxInfo(head=self.head.config(), classes=list(BOX_CLASSES), malignant_threshold=self.threshold,
                       target_recall=float(self.target_recall), oof_recall=self.recall, oof_far=self.far,
                       oof_auc=self.oof_auc, oof_auc_mirror=self.auc_mirror, oof_auc_no_mirror=self.auc_no_mirror,
                       calibration_view=CALIBRATION_VIEW, n_train_images=n, n_train_samples=n * len(self.views),
                       train_views=list(self.views), flip=bool(self.flip), margin=BOX_MARGIN, test_auc=test_auc,
                       n_test=int(n_test))


def calibrate_box(parts, seed: int, folds: int = 5, C: float = DEFAULT_C, target_recall: float = 0.95,
                  flip="auto", balanced: bool = True, per_image: bool = False, views=TRAIN_BOX_VIEWS,
                  pool=None, final=None) -> BoxCalibration:
    """A box head on all of ``parts`` = [(cache, training lesion rows)] (fit_box_parts' weights),
    calibrated out of fold: group-aware ``folds``-fold inside each part (seed ``seed``), every
    fold's head trained on the other folds of all parts, scored with CALIBRATION_VIEW; the
    threshold reaches ``target_recall`` on those OOF scores. ``flip``: True / False (average the
    mirrored pair at prediction or not) or "auto" (it must raise the OOF AUC by MIRROR_GAIN).
    ``pool``: an Executor the fits run on (None: one after the other). ``final``: a Future of
    fit_box_parts(parts, balanced, C, views, per_image) already submitted, else submitted here.
    Every fold's L-BFGS starts from the head on all parts (BoxHead.fit ``start``: the same
    optimum within the solver's tolerance, in fewer iterations). Features are read once per part."""
    if flip not in (True, False, "auto"):
        raise BoxTrainingError(f"flip must be True, False or 'auto', got {flip!r}", "e.g. flip='auto'", param="flip")
    if not 0 < target_recall < 1:
        raise BoxTrainingError(f"target_recall must be within (0, 1), got {target_recall!r}", "e.g. 0.95",
                               param="target_recall")
    if pool is None:
        with ThreadPoolExecutor(1) as one:
            return calibrate_box(parts, seed, folds, C, target_recall, flip, balanced, per_image, views, one, final)
    data = _gather(parts, views)
    final = final or pool.submit(_fit_gathered, data, balanced, C, per_image)
    fo = [D.group_kfold(fc.labels[r], fc.groups[r], [fc.paths[i] for i in r], folds, seed) if len(r) else r
          for fc, r in parts]

    def fold_data(f):
        nv = len(views)
        return [None if d is None or not (k != f).any() else
                tuple(a[np.tile(k != f, nv)] for a in d) for d, k in zip(data, fo)]

    start = final.result()
    heads = [pool.submit(_fit_gathered, fold_data(f), balanced, C, per_image, start) for f in range(folds)]
    y = np.concatenate([box_y(fc, r) for fc, r in parts])
    mirrored, plain = np.zeros(len(y)), np.zeros(len(y))
    off = np.cumsum([0] + [len(r) for _, r in parts])
    for f in range(folds):
        h = heads[f].result()
        for j, ((fc, r), k) in enumerate(zip(parts, fo)):
            te = r[k == f] if len(r) else r
            if not len(te):
                continue
            idx = off[j] + np.nonzero(k == f)[0]
            plain[idx] = box_scores(h, fc, te, CALIBRATION_VIEW, False)
            mirrored[idx] = box_scores(h, fc, te, CALIBRATION_VIEW, True)
    cal = BoxCalibration(start, y, mirrored, plain, False, 0.0, float(target_recall), tuple(views))
    cal.flip = bool(cal.auc_mirror - cal.auc_no_mirror >= MIRROR_GAIN) if flip == "auto" else bool(flip)
    cal.threshold = float(M.threshold_for_recall(y == 1, cal.oof, target_recall))
    return cal


def box_test_auc(head: BoxHead, parts, flip: bool) -> dict:
    """{box view: benign-vs-malignant AUC} on held-out ``parts`` = [(cache, lesion rows)] with the
    true box and the sloppy boxes every non-empty part's cache holds (NaN without both classes)."""
    parts = [(fc, r) for fc, r in parts if len(r)]
    y = np.concatenate([box_y(fc, r) for fc, r in parts]) == 1 if parts else np.zeros(0, bool)
    out = {}
    for v in ("box",) + tuple(v for v in EVAL_BOX_VIEWS if all(v in fc.views for fc, _ in parts)):
        if y.any() and (~y).any():
            out[v] = float(M.roc_auc(y, np.concatenate([box_scores(head, fc, r, v, flip) for fc, r in parts])))
        else:
            out[v] = float("nan")
    return out


def add_box_head(model: Model, cache, C: float = DEFAULT_C, folds: int = 5, target_recall: float = 0.95,
                 flip="auto", views=TRAIN_BOX_VIEWS, log=None) -> Model:
    """A new Model: ``model`` plus a box head trained on the training lesion images of the model's
    own split (rebuilt from the card and checked by digest), calibrated out of fold, evaluated on
    the split's held-out lesion images with the true and the sloppy boxes. ``flip``: True / False
    (average the mirrored pair at prediction or not), or "auto" (the MIRROR_GAIN rule)."""
    log = log or (lambda m: None)
    card = model.card
    if card is None:
        raise ModelError("a model without a card has no split to train a box head on", "load a saved model")
    if cache.backbone_sha256 != card.backbone_sha256 or cache.preprocess_version != card.preprocess_version:
        raise BoxTrainingError(f"{cache.path}: backbone/preprocessing ({cache.backbone_sha256[:12]}, "
                               f"{cache.preprocess_version}) differ from the model's ({card.backbone_sha256[:12]}, "
                               f"{card.preprocess_version})", "use the cache the model was trained on")
    sp = check_split(cache, card.split.seed, card.split.test_fraction, card.split.digest)
    train = lesion_rows(cache, sp.train)
    test = lesion_rows(cache, sp.test)
    cal = calibrate_box([(cache, train)], card.split.seed, folds, C, target_recall, flip, per_image=True, views=views)
    if flip == "auto":
        log(f"box head: OOF AUC {cal.auc_mirror:.3f} with the mirrored pair, {cal.auc_no_mirror:.3f} without -> "
            f"{'mirror' if cal.flip else 'no mirror'} at prediction (rule: gain >= {MIRROR_GAIN})")
    log(f"box head: {len(train)} training lesion images, OOF AUC {cal.oof_auc:.3f}, threshold "
        f"{cal.threshold:.3f} (OOF recall {cal.recall:.3f}, FAR {cal.far:.3f})")
    test_auc = box_test_auc(cal.head, [(cache, test)], cal.flip)
    log("box head test AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in test_auc.items()))
    return Model(model.head, replace(card, box=cal.info(test_auc, len(test))), model.ood, cal.head)
