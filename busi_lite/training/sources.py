"""Training one model on several sources (BUSI's folder, a clinic's manifest, ...): ``fit_sources``.

Each source is a feature cache of one dataset. Every source gets its OWN group-aware
train/test split (seed, test fraction: patients/duplicate groups never straddle train and
test); the head trains on the union of the training parts, and every figure on the card is
measured on held-out images only, per source and pooled.

- Classes: the union of the sources' classes in busi-lite's order (normal, benign, malignant).
  No source with normal -> a real two-class head (benign, malignant). Each image counts as
  what it is labelled (labels mapped by name).
- Source weights: ``balanced`` scales each source's sample weights to the same total,
  ``by-count`` lets every image count once (a big source then dominates).
- Thresholds and OOD statistics: out-of-fold predictions on every source's TRAINING images
  (group-aware k-fold inside each source's training part), so the flags are calibrated on the
  model's own training sources, never on test images.
- Box head (``box=True``): trained on every source's training lesion images whose cache rows
  hold the box views (boxes from masks or from a manifest), weighted like the main head,
  calibrated out of fold, scored on each source's held-out lesion images.
- The card lists every source (:class:`busi_lite.model.card.SourceInfo`).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from busi_lite.common.constants import CLASSES
from busi_lite.common.constants import VERSION as __version__
from busi_lite.common.errors import BusiError
from busi_lite.evaluation import metrics as M
from busi_lite.features.cache import FeatureCache
from busi_lite.heads import get_head
from busi_lite.heads.box import CLASSES as BOX_CLASSES
from busi_lite.heads.box import DEFAULT_C
from busi_lite.io import data as D
from busi_lite.io.sources import ManifestSource
from busi_lite.model.card import ModelCard, OODInfo, SourceInfo, TestMetrics, TestPredictions
from busi_lite.model.config import Config
from busi_lite.model.model import OOD, Model
from busi_lite.model.records import Metrics, SplitInfo
from busi_lite.training.box import box_scores, box_test_auc, box_y, calibrate_box, fit_box_parts, lesion_rows
from busi_lite.training.core import (
    auc_interval,
    calibrate,
    chance_warnings,
    check_preprocess,
    predict_rows,
    training_rows,
)
from busi_lite.training.site import fit_on, site_weights

SOURCE_WEIGHTS = ("balanced", "by-count")


@dataclass
class TrainingSource:
    """A named feature cache to train on. ``kind``/``location``: what the user gave (a dataset
    source kind and its path, or "cache" and the cache path), for the model card."""
    name: str
    cache: FeatureCache
    kind: str = "cache"
    location: str = ""


def as_sources(items) -> list[TrainingSource]:
    """TrainingSources from TrainingSources, FeatureCaches or cache paths; names made unique."""
    out = []
    for x in items:
        if not isinstance(x, TrainingSource):
            fc = x if isinstance(x, FeatureCache) else FeatureCache(x)
            x = TrainingSource(source_name(fc), fc, "cache", str(fc.path))
        out.append(x)
    seen = {}
    for s in out:
        k = seen.setdefault(s.name, 0)
        seen[s.name] = k + 1
        if k:
            s.name = f"{s.name}-{k + 1}"
    return out


def source_name(fc: FeatureCache) -> str:
    """A cache's dataset name (io.sources: the folder's name, a manifest's stem), else the file stem."""
    given = str(fc.attrs.get("dataset_source") or fc.attrs.get("dataset_root") or "")
    if not given:
        return fc.path.stem
    if given.lower().endswith(".csv"):
        return ManifestSource(given).name
    return given.rstrip("/").rsplit("/", 1)[-1] or fc.path.stem


def model_classes(caches) -> tuple:
    """Union of the caches' classes in CLASSES order; BusiError for an unknown class or no malignant."""
    present = {c for fc in caches for c in fc.classes}
    unknown = sorted(present - set(CLASSES))
    if unknown:
        raise BusiError(f"classes {unknown} are not among busi-lite's {list(CLASSES)}",
                        "label images normal, benign or malignant", param="data")
    if "malignant" not in present:
        raise BusiError("no source has malignant images", "add a source with biopsy-proven malignant cases",
                        param="data")
    return tuple(c for c in CLASSES if c in present)


def files_digest(fc: FeatureCache) -> str:
    """SHA-256 (16 hex) over the cache's sorted (path, content hash): which images a source held."""
    h = hashlib.sha256()
    for p, c in sorted(zip(fc.paths, fc.content_sha256)):
        h.update(f"{p}\0{c}\0".encode())
    return h.hexdigest()[:16]


def _check_compatible(sources, config: Config) -> None:
    first = sources[0].cache
    for s in sources:
        fc = s.cache
        if (fc.backbone_sha256, fc.preprocess_version) != (first.backbone_sha256, first.preprocess_version):
            raise BusiError(f"source {s.name} ({fc.path}) has another backbone or preprocessing "
                            f"({fc.preprocess_version}) than {sources[0].name} ({first.preprocess_version})",
                            "extract every source with the same backbone and --preprocess", param="cache")
    for s in sources:
        check_preprocess(s.cache, config)


def _mapped(fc: FeatureCache, classes) -> np.ndarray:
    """[len(fc.classes)] index of each cache class among ``classes``."""
    return np.array([list(classes).index(c) for c in fc.classes], np.int64)


def _oof(parts, config: Config, classes, seed: int, k: int, balanced: bool, lesion: bool, pool,
         start=None) -> dict:
    """Out-of-fold predictions on every part's rows (group-aware k-fold inside each part), the
    folds run on ``pool`` (an Executor). parts = [(cache, rows)]; ``start``: a Future of the head
    on all parts, which the folds of a ``warm_start`` head start from. Returns proba [n,C],
    lesion [n,cells] | None, ood [n], y [n] (model classes)."""
    folds = [D.group_kfold(fc.labels[r], fc.groups[r], [fc.paths[i] for i in r], k, seed) for fc, r in parts]
    n = [len(r) for _, r in parts]
    off = np.concatenate([[0], np.cumsum(n)])
    C = len(classes)
    out = {"proba": np.zeros((off[-1], C), np.float32), "ood": np.zeros(off[-1]),
           "lesion": np.zeros((off[-1], parts[0][0].spec.cells), np.float32) if lesion else None,
           "y": np.concatenate([_mapped(fc, classes)[fc.labels[r]] for fc, r in parts])}

    def one(f):
        train = [(fc, r[fo != f]) for (fc, r), fo in zip(parts, folds) if (fo != f).any()]
        head, _ = fit_on(train, config, classes, seed + 1000 * (f + 1), balanced,
                         start.result()[0][0] if start is not None else None)
        ood = OOD.fit(np.concatenate([fc.pooled("raw", r) for fc, r in train]))
        res = []
        for j, ((fc, r), fo) in enumerate(zip(parts, folds)):
            te = r[fo == f]
            if len(te):
                res.append((off[j] + np.nonzero(fo == f)[0], predict_rows(head, fc, te, config),
                            ood.score(fc.pooled("raw", te))))
        return res

    for fut in [pool.submit(one, f) for f in range(k)]:
        for idx, p, o in fut.result():
            out["proba"][idx] = p.proba
            if lesion:
                out["lesion"][idx] = p.lesion
            out["ood"][idx] = o
    return out


def _timed(fn, *args):
    """(fn(*args), seconds it took)."""
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def _weights(parts, balanced: bool) -> list[float]:
    """Each part's share of the total training weight (one per image before class weighting)."""
    w = site_weights([np.ones(len(r)) for _, r in parts], balanced)
    n = np.cumsum([0] + [len(r) for _, r in parts])
    return [float(w[a:b].sum() / w.sum()) for a, b in zip(n[:-1], n[1:])]


def fit_sources(sources, config: Config, seed: int = 0, source_weight: str = "balanced",
                test_fraction: float = 0.15, folds: int = 5, target_recall: float = 0.95, box: bool = False,
                box_C: float = DEFAULT_C, jobs: int = 2, log=None) -> tuple[Model, ModelCard]:
    """Train ``config`` on every source's training split, calibrate on out-of-fold training
    predictions, score each source's held-out images once (module docstring). ``sources``:
    TrainingSources, FeatureCaches or cache paths. ``jobs``: fits run at once (threads; each
    fit is independent and seeded, so the result does not depend on it). Returns (model, card)."""
    log = log or (lambda m: None)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BusiError(f"jobs must be a whole number >= 1, got {jobs!r}", "e.g. jobs=2", param="jobs")
    with ThreadPoolExecutor(jobs) as pool:
        return _fit_sources(sources, config, seed, source_weight, test_fraction, folds, target_recall, box, box_C,
                            log, pool)


def _fit_sources(sources, config, seed, source_weight, test_fraction, folds, target_recall, box, box_C, log, pool):
    if source_weight not in SOURCE_WEIGHTS:
        raise BusiError(f"source_weight {source_weight!r} is not one of {', '.join(SOURCE_WEIGHTS)}",
                        "choose balanced or by-count", param="source_weight")
    sources = as_sources(sources)
    if not sources:
        raise BusiError("no training source given", "give at least one --data or --cache", param="data")
    _check_compatible(sources, config)
    balanced = source_weight == "balanced"
    t0 = time.perf_counter()
    classes = model_classes([s.cache for s in sources])
    mal = classes.index("malignant")
    normal = classes.index("normal") if "normal" in classes else None
    splits = [s.cache.split(seed, test_fraction) for s in sources]
    parts = [(s.cache, training_rows(s.cache, sp.train, config, seed)) for s, sp in zip(sources, splits)]
    box_train = _box_parts(sources, splits, "train") if box else []
    # the box head on all training lesions first: the longest fit, and its folds start from it
    box_final = pool.submit(fit_box_parts, box_train, balanced, box_C) if any(len(r) for _, r in box_train) else None
    final = pool.submit(_timed, fit_on, parts, config, classes, seed, balanced)
    final_ood = pool.submit(lambda: OOD.fit(np.concatenate([fc.pooled("raw", r) for fc, r in parts])))
    lesion = get_head(config.head).has_lesion_map and normal is not None
    oof = _oof(parts, config, classes, seed, folds, balanced, lesion, pool,
               final if get_head(config.head).warm_start else None)
    (head, hist), t_train = final.result()
    hist["n_train"] = int(sum(len(r) for _, r in parts) * (2 if config.flip else 1))
    log(f"trained {config.name} on {sum(len(r) for _, r in parts)} images of {len(sources)} source(s) "
        f"({', '.join(s.name for s in sources)}), classes {', '.join(classes)}, in {t_train:.1f}s")
    warnings = chance_warnings(oof, malignant=mal)
    for w in warnings:
        log(f"WARNING: {config.name}: {w}")
    cal = calibrate(oof, target_recall, malignant=mal, normal=-1 if normal is None else normal)
    ood = final_ood.result()
    ood.threshold = cal.ood_threshold
    shares = _weights(parts, balanced)
    infos, tp, ty, tpath = [], [], [], []
    for s, sp, (fc, rows), share in zip(sources, splits, parts, shares):
        p = predict_rows(head, fc, sp.test, config)
        y = _mapped(fc, classes)[fc.labels[sp.test]]
        tp.append(p.proba)
        ty.append(y)
        tpath += [f"{s.name}:{fc.paths[i]}" for i in sp.test]
        auc, lo, hi = auc_interval(y == mal, p.proba[:, mal])
        alert = p.proba[:, mal] >= cal.malignant_threshold
        infos.append(SourceInfo(
            name=s.name, kind=s.kind, location=s.location,
            counts={c: int((fc.labels == i).sum()) for i, c in enumerate(fc.classes)},
            files_digest=files_digest(fc), split_digest=sp.digest(fc.paths), n_train=int(len(rows)),
            n_test=int(len(sp.test)), weight=share, test_auc=auc, test_auc_lo=lo, test_auc_hi=hi,
            test_recall=float(alert[y == mal].mean()) if (y == mal).any() else float("nan"),
            test_far=float(alert[y != mal].mean()) if (y != mal).any() else float("nan"), weighting=source_weight))
        log(f"{s.name}: {len(sp.test)} held-out images, malignant AUC {auc:.3f} [{lo:.3f}, {hi:.3f}], "
            f"recall {infos[-1].test_recall:.3f} FAR {infos[-1].test_far:.3f} at the operating point; "
            f"weight {share:.2f}")
    proba, y = np.concatenate(tp), np.concatenate(ty)
    argmax = Metrics.from_json(M.summarize(y, proba, classes))
    op = Metrics.from_json(M.summarize(y, proba, classes, malignant_threshold=cal.malignant_threshold))
    digest = hashlib.sha256("".join(i.name + i.split_digest for i in infos).encode()).hexdigest()[:16]
    first = sources[0].cache
    card = ModelCard(
        config=config, classes=list(classes), backbone_sha256=first.backbone_sha256,
        backbone_file=first.attrs.get("backbone_file"), preprocess_version=first.preprocess_version,
        feature_shape=first.spec.feature_shape, package_version=__version__,
        split=SplitInfo(seed=seed, test_fraction=test_fraction,
                        digest=infos[0].split_digest if len(infos) == 1 else digest,
                        n_train_images=int(sum(i.n_train for i in infos)), n_test=int(len(y)),
                        excluded=[f"{s.name}:{s.cache.paths[i]}" for s, sp in zip(sources, splits)
                                  for i in sp.excluded]),
        calibration=cal, metrics=TestMetrics(argmax, op),
        test_predictions=TestPredictions(tpath, y, np.round(proba, 5)), history=hist, train_seconds=t_train,
        total_seconds=0.0, head=head.config(), ood=OODInfo(ood.resid_var, ood.threshold),
        warnings=warnings or None, backbone=first.spec, sources=infos)
    model = Model(head, card, ood)
    if box:
        model = fit_box_sources(model, sources, splits, seed, balanced, folds, target_recall, box_C, log, pool,
                                box_final)
    model.card.total_seconds = time.perf_counter() - t0
    return model, model.card


def _box_parts(sources, splits, which: str):
    """[(cache, lesion rows with box views)] of each source's ``which`` ("train" | "test") rows;
    sources without box views or without benign/malignant images are left out (logged by caller)."""
    out = []
    for s, sp in zip(sources, splits):
        fc = s.cache
        if "box" not in fc.views or not all(c in fc.classes for c in BOX_CLASSES):
            out.append((fc, np.zeros(0, np.int64)))
            continue
        out.append((fc, lesion_rows(fc, getattr(sp, which))))
    return out


def fit_box_sources(model: Model, sources, splits, seed: int, balanced: bool, folds: int = 5,
                    target_recall: float = 0.95, C: float = DEFAULT_C, log=None, pool=None, final=None) -> Model:
    """``model`` plus a box head trained on every source's training lesion images (see module doc).
    Mirror at prediction by the training-data rule of training.box (MIRROR_GAIN). ``pool``: an
    Executor the fits run on (None: one after the other); ``final``: a Future of the box head on
    all training lesions (fit_box_parts(train, balanced, C)) already submitted to it."""
    log = log or (lambda m: None)
    if pool is None:
        with ThreadPoolExecutor(1) as one:
            return fit_box_sources(model, sources, splits, seed, balanced, folds, target_recall, C, log, one, final)
    train, test = _box_parts(sources, splits, "train"), _box_parts(sources, splits, "test")
    if not any(len(r) for _, r in train):
        raise BusiError("no source holds lesion images with boxes", "extract the sources with the box views "
                        "(masks or manifest boxes)", param="box")
    for s, (_, r) in zip(sources, train):
        if not len(r):
            log(f"note: source {s.name} gives the box head no lesion box (no box views or no benign/malignant)")
    cal = calibrate_box(train, seed, folds, C, target_recall, "auto", balanced, pool=pool, final=final)
    log(f"box head: {len(cal.y)} training lesion images, OOF AUC {cal.oof_auc:.3f} "
        f"({'mirror' if cal.flip else 'no mirror'}), threshold {cal.threshold:.3f} (OOF recall {cal.recall:.3f}, "
        f"FAR {cal.far:.3f})")
    head, flip, infos = cal.head, cal.flip, list(model.card.sources or [])
    test_auc = box_test_auc(head, test, flip)
    for j, (fc, r) in enumerate(test):
        yb = box_y(fc, r) == 1 if len(r) else np.zeros(0, bool)
        if j < len(infos) and yb.any() and (~yb).any():
            infos[j] = replace(infos[j], box_test_auc=float(M.roc_auc(yb, box_scores(head, fc, r, "box", flip))))
            log(f"{infos[j].name}: box head held-out AUC (true box) {infos[j].box_test_auc:.3f} on {len(r)} lesions")
    info = cal.info(test_auc, sum(len(r) for _, r in test))
    return Model(model.head, replace(model.card, box=info, sources=infos), model.ood, head)
