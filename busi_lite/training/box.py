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

from dataclasses import replace

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
    """A BoxHead fitted on the lesion images among ``rows`` (training rows only)."""
    rows = lesion_rows(cache, rows)
    X, y, w, _ = box_xy(cache, rows, views)
    head = BoxHead(X.shape[1], C)
    head.fit(X, y, sample_weight=w)
    return head


def fit_box_parts(parts, balanced: bool = True, C: float = DEFAULT_C, views=TRAIN_BOX_VIEWS) -> BoxHead:
    """One BoxHead on several sources' lesion rows. parts = [(cache, lesion rows)] (empty parts
    are skipped); each image counts once; ``balanced``: each source's weights scaled to the same total."""
    Xs, ys, ws = [], [], []
    for cache, rows in parts:
        if len(rows):
            X, y, w, _ = box_xy(cache, rows, views)
            Xs.append(X), ys.append(y), ws.append(w)
    X = np.concatenate(Xs)
    head = BoxHead(X.shape[1], C)
    head.fit(X, np.concatenate(ys), sample_weight=site_weights(ws, balanced))
    return head


def box_scores(head: BoxHead, cache, rows, view: str = "box", flip: bool = True) -> np.ndarray:
    """p(malignant) [n] of ``rows`` with box view ``view``; averaged with ``view_flip`` when
    ``flip`` and the cache holds it (sloppy views have no mirror)."""
    p = head.predict_proba(cache_inputs(BoxHead, cache, view, rows))[:, 1]
    if flip and f"{view}_flip" in cache.views:
        p = (p + head.predict_proba(cache_inputs(BoxHead, cache, f"{view}_flip", rows))[:, 1]) / 2
    return p


def out_of_fold_scores(cache, rows, seed: int, folds: int = 5, C: float = DEFAULT_C, views=TRAIN_BOX_VIEWS,
                       view: str = CALIBRATION_VIEW) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold p(malignant) [n] of lesion ``rows`` (group-aware k-fold inside them), box view
    ``view``: (with the mirrored pair averaged in, without it)."""
    rows = np.asarray(rows, np.int64)
    fold = D.group_kfold(cache.labels[rows], cache.groups[rows], [cache.paths[i] for i in rows], folds, seed)
    mirrored, plain = np.zeros(len(rows)), np.zeros(len(rows))
    for f in range(folds):
        te = fold == f
        if te.any():
            head = fit_box_head(cache, rows[~te], C, views)
            plain[te] = box_scores(head, cache, rows[te], view, False)
            mirrored[te] = plain[te]
            if f"{view}_flip" in cache.views:  # box_scores(..., flip=True) without predicting ``view`` again
                mirrored[te] = (plain[te] + head.predict_proba(cache_inputs(BoxHead, cache, f"{view}_flip",
                                                                                     rows[te]))[:, 1]) / 2
    return mirrored, plain


def add_box_head(model: Model, cache, C: float = DEFAULT_C, folds: int = 5, target_recall: float = 0.95,
                 flip="auto", views=TRAIN_BOX_VIEWS, log=None) -> Model:
    """A new Model: ``model`` plus a box head trained on the training lesion images of the model's
    own split (rebuilt from the card and checked by digest), calibrated out of fold, evaluated on
    the split's held-out lesion images with the true and the sloppy boxes. ``flip``: True / False
    (average the mirrored pair at prediction or not), or "auto" (the MIRROR_GAIN rule)."""
    if flip not in (True, False, "auto"):
        raise BoxTrainingError(f"flip must be True, False or 'auto', got {flip!r}", "e.g. flip='auto'", param="flip")
    log = log or (lambda m: None)
    card = model.card
    if card is None:
        raise ModelError("a model without a card has no split to train a box head on", "load a saved model")
    if cache.backbone_sha256 != card.backbone_sha256 or cache.preprocess_version != card.preprocess_version:
        raise BoxTrainingError(f"{cache.path}: backbone/preprocessing ({cache.backbone_sha256[:12]}, "
                               f"{cache.preprocess_version}) differ from the model's ({card.backbone_sha256[:12]}, "
                               f"{card.preprocess_version})", "use the cache the model was trained on")
    if not 0 < target_recall < 1:
        raise BoxTrainingError(f"target_recall must be within (0, 1), got {target_recall!r}", "e.g. 0.95",
                               param="target_recall")
    sp = check_split(cache, card.split.seed, card.split.test_fraction, card.split.digest)
    train = lesion_rows(cache, sp.train)
    test = lesion_rows(cache, sp.test)
    head = fit_box_head(cache, train, C, views)
    y = box_y(cache, train)
    oof_m, oof_p = out_of_fold_scores(cache, train, card.split.seed, folds, C, views, CALIBRATION_VIEW)
    auc_m, auc_p = M.roc_auc(y == 1, oof_m), M.roc_auc(y == 1, oof_p)
    if flip == "auto":
        flip = bool(auc_m - auc_p >= MIRROR_GAIN)
        log(f"box head: OOF AUC {auc_m:.3f} with the mirrored pair, {auc_p:.3f} without -> "
            f"{'mirror' if flip else 'no mirror'} at prediction (rule: gain >= {MIRROR_GAIN})")
    oof, oof_auc = (oof_m, auc_m) if flip else (oof_p, auc_p)
    thr = float(M.threshold_for_recall(y == 1, oof, target_recall))
    pos, neg = oof[y == 1], oof[y == 0]
    recall, far = float((pos >= thr).mean()), float((neg >= thr).mean()) if len(neg) else float("nan")
    log(f"box head: {len(train)} training lesion images, OOF AUC {oof_auc:.3f}, threshold "
        f"{thr:.3f} (OOF recall {recall:.3f}, FAR {far:.3f})")
    yt = box_y(cache, test) == 1
    test_auc = {}
    for v in ("box",) + tuple(v for v in EVAL_BOX_VIEWS if v in cache.views):
        test_auc[v] = float(M.roc_auc(yt, box_scores(head, cache, test, v, flip))) if yt.any() and (~yt).any() \
            else float("nan")
    log("box head test AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in test_auc.items()))
    info = BoxInfo(head=head.config(), classes=list(BOX_CLASSES), malignant_threshold=thr,
                   target_recall=float(target_recall), oof_recall=recall, oof_far=far,
                   oof_auc=float(oof_auc), oof_auc_mirror=float(auc_m), oof_auc_no_mirror=float(auc_p),
                   calibration_view=CALIBRATION_VIEW,
                   n_train_images=int(len(train)), n_train_samples=int(len(train) * len(views)),
                   train_views=list(views), flip=bool(flip), margin=BOX_MARGIN, test_auc=test_auc,
                   n_test=int(len(test)))
    return Model(model.head, replace(card, box=info), model.ood, head)
