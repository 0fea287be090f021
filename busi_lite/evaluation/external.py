"""External evaluation: a trained model on any labelled folder (e.g. another hospital).

``evaluate_external(model, cache)`` -> :class:`ExternalEvaluation`, a typed, versioned
record (``to_json`` / ``from_json``). Contracts:

- Classes are mapped BY NAME between the folder (any subset, e.g. benign/malignant)
  and the model (e.g. normal/benign/malignant); a folder class the model does not
  know is refused. The confusion matrix is folder classes (rows) x model classes
  (columns): a 'normal' prediction on lesion-only data is counted, never hidden.
- Malignant vs the rest: truth = the folder class is named 'malignant', score =
  the model's p(malignant). AUC with a stratified bootstrap 95 % percentile interval
  (``n_resamples`` = 2000, ``seed`` = 0 by default; both recorded). Recall, FAR and
  precision with Wilson 95 % intervals, at argmax and at the model's operating point
  (its card's ``calibration.malignant_threshold``, or ``threshold_malignant``).
- EVERY image of the folder is evaluated, flags included (as flag_eval does on a
  model's held-out split), since none was used in training. So the model's own
  training cache is refused (its split rebuilt with the model's seed gives the
  digest recorded in the card); images sharing relative paths with the model's
  held-out test images give a note.
- The cache must come from the model's backbone and preprocessing (refused
  otherwise); everything is read through the model card and cache attributes.
- Flags run on cached features: the pixel checks of unusual_input are not applied.

:func:`ensure_cache` finds or builds a folder's feature cache (default path
``cache/<folder name>_features.h5`` beside the default BUSI cache), the same file
``extract`` writes. Evaluation only: imports no training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from busi_lite.common.errors import BusiError
from busi_lite.evaluation import metrics as M
from busi_lite.evaluation.flag_eval import flag_table
from busi_lite.model.records import (
    SCHEMA_VERSION,
    Record,
    check_schema,
    field_error,
    read_field,
    read_int,
    read_list,
    read_num,
    read_obj,
    read_str,
)
from busi_lite.serving.flags import FlagConfig, FlagEvidence, compute_flags, thresholds
from busi_lite.serving.shift import SHIFT_WARNING, check_coords, image_coords

MALIGNANT = "malignant"
N_RESAMPLES = 2000
BATCH = 256  # cached images predicted at once (bounds memory for big folders)


class ExternalError(BusiError):
    """The folder/cache cannot be evaluated with this model: what -> fix."""


# ---------------------------------------------------------------- records

@dataclass
class Rate(Record):
    """A proportion k / n with its Wilson 95 % interval (nan when n == 0)."""
    SCHEMA: ClassVar[str] = f"rate/{SCHEMA_VERSION}"
    value: float
    lo: float
    hi: float
    k: int
    n: int

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        lo, hi = M.wilson_interval(int(k), int(n))
        return cls(float(k / n) if n else math.nan, lo, hi, int(k), int(n))

    @classmethod
    def from_json(cls, d, where="rate") -> Rate:
        d = read_obj(d, where)
        return cls(read_num(d, "value", where), read_num(d, "lo", where), read_num(d, "hi", where),
                   read_int(d, "k", where, 0), read_int(d, "n", where, 0))


@dataclass
class OperatingPoint(Record):
    """Malignant-vs-rest figures at one decision rule (threshold None: argmax)."""
    SCHEMA: ClassVar[str] = f"operating_point/{SCHEMA_VERSION}"
    threshold: float | None
    recall: Rate
    far: Rate
    precision: Rate

    @classmethod
    def of(cls, y_mal: np.ndarray, alert: np.ndarray, threshold) -> OperatingPoint:
        """y_mal, alert: [N] bool (truly malignant, called malignant)."""
        tp, fn = int((y_mal & alert).sum()), int((y_mal & ~alert).sum())
        fp, tn = int((~y_mal & alert).sum()), int((~y_mal & ~alert).sum())
        return cls(None if threshold is None else float(threshold), Rate.of(tp, tp + fn), Rate.of(fp, fp + tn),
                   Rate.of(tp, tp + fp))

    @classmethod
    def from_json(cls, d, where="operating point") -> OperatingPoint:
        d = read_obj(d, where)
        return cls(read_num(d, "threshold", where, none_ok=True),
                   *(Rate.from_json(read_field(d, k, where), f"{where}.{k}") for k in ("recall", "far", "precision")))


@dataclass
class ImageRow(Record):
    """One image: path (relative to the folder), true class, p per model class, argmax label,
    malignant alert at the operating point, names of the flags raised."""
    SCHEMA: ClassVar[str] = f"image_row/{SCHEMA_VERSION}"
    path: str
    true: str
    proba: dict
    label: str
    alert: bool
    flags: list

    @classmethod
    def from_json(cls, d, where="image") -> ImageRow:
        d = read_obj(d, where)
        proba = read_obj(read_field(d, "proba", where), f"{where}.proba")
        alert = read_field(d, "alert", where)
        if not isinstance(alert, bool):
            field_error(where, f"alert must be true/false, got {alert!r}")
        flags = read_list(d, "flags", where)
        if not all(isinstance(f, str) for f in flags):
            field_error(where, "flags must be a list of names")
        return cls(read_str(d, "path", where), read_str(d, "true", where),
                   {str(k): read_num(proba, k, f"{where}.proba") for k in proba}, read_str(d, "label", where), alert, flags)


@dataclass
class ExternalEvaluation(Record):
    """A model evaluated on every image of a labelled folder (see the module docstring)."""
    SCHEMA: ClassVar[str] = f"external_evaluation/{SCHEMA_VERSION}"
    DOCUMENT: ClassVar[bool] = True
    _omit_none: ClassVar[tuple] = ("per_image",)
    model: str
    data_root: str | None
    cache: str
    backbone_sha256: str
    preprocess_version: str
    dataset_classes: list
    model_classes: list
    counts: dict                 # {folder class: n images}
    n: int
    n_malignant: int
    auc: float                   # malignant vs the rest
    auc_lo: float
    auc_hi: float
    auc_interval: str            # how the interval was made
    n_resamples: int
    seed: int
    argmax: OperatingPoint
    operating_point: OperatingPoint
    confusion: list              # [folder classes][model classes] ints
    flags: FlagEvidence
    notes: list
    per_image: list | None = None  # [ImageRow]

    @classmethod
    def from_json(cls, d, where="external evaluation") -> ExternalEvaluation:
        d = read_obj(d, where)
        check_schema(cls, d, where)
        dc, mc = read_list(d, "dataset_classes", where), read_list(d, "model_classes", where)
        conf = read_list(d, "confusion", where)
        if len(conf) != len(dc) or not all(isinstance(r, list) and len(r) == len(mc) and
                                           all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                                           for r in conf):
            field_error(where, "confusion must be [dataset classes][model classes] integers")
        counts = read_obj(read_field(d, "counts", where), f"{where}.counts")
        rows = d.get("per_image")
        try:
            flags = FlagEvidence.from_json(read_field(d, "flags", where), f"{where}.flags")
        except BusiError as e:
            field_error(f"{where}.flags", e.what)
        notes = read_list(d, "notes", where)
        if not all(isinstance(s, str) for s in notes):
            field_error(where, "notes must be strings")
        return cls(
            model=read_str(d, "model", where), data_root=read_str(d, "data_root", where, none_ok=True),
            cache=read_str(d, "cache", where), backbone_sha256=read_str(d, "backbone_sha256", where),
            preprocess_version=read_str(d, "preprocess_version", where), dataset_classes=dc, model_classes=mc,
            counts={str(k): read_int(counts, k, f"{where}.counts", 0) for k in counts}, n=read_int(d, "n", where, 0),
            n_malignant=read_int(d, "n_malignant", where, 0), auc=read_num(d, "auc", where), auc_lo=read_num(d, "auc_lo", where),
            auc_hi=read_num(d, "auc_hi", where), auc_interval=read_str(d, "auc_interval", where),
            n_resamples=read_int(d, "n_resamples", where, 1), seed=read_int(d, "seed", where),
            argmax=OperatingPoint.from_json(read_field(d, "argmax", where), f"{where}.argmax"),
            operating_point=OperatingPoint.from_json(read_field(d, "operating_point", where), f"{where}.operating_point"),
            confusion=conf, flags=flags, notes=notes,
            per_image=None if rows is None else [ImageRow.from_json(r, f"{where}.per_image[{i}]")
                                                 for i, r in enumerate(read_list(d, "per_image", where))])


# ---------------------------------------------------------------- cache

def default_cache_path(data_root, preprocess=None) -> Path:
    """cache/<folder name>_features.h5 (v1; cache/<folder name>_features_v2.h5 for v2), beside
    the default BUSI cache (relative to the working folder): features.default_cache's rule."""
    from busi_lite.features.cache import default_cache
    from busi_lite.features.preprocess import V1

    from busi_lite.io.sources import open_source

    name = open_source(data_root).name or "dataset"
    return default_cache(preprocess or V1, stem=name)


def ensure_cache(data_root, cache=None, backbone=None, log=None, progress=False, preprocess=None,
                 **extract_kw) -> Path:
    """The feature cache of ``data_root``: reused when it lists exactly the folder's images (same
    relative paths and classes) apart from files an earlier extraction here could not read
    (recorded beside the cache, unchanged since: named again, never retried), otherwise extracted
    (incrementally) into ``cache`` (default :func:`default_cache_path`) with the views it already
    holds plus the ones asked for. A file changed under the same name is not noticed here:
    extract again to refresh. A file that cannot be read is skipped and named, never blocks the
    folder. Returns the cache path."""
    from busi_lite.features.cache import FeatureCache, extract
    from busi_lite.io.sources import open_source

    log = log or (lambda m: None)
    out = Path(cache) if cache is not None else default_cache_path(data_root, preprocess)
    src = open_source(data_root)  # a dataset folder or a CSV manifest (io.sources)
    root = Path(src.root)
    ds = src.discover()
    want = {(s.path, ds.classes[s.label]) for s in ds.samples}
    if out.is_file():
        with FeatureCache(out) as fc:
            have = {(p, fc.classes[int(lab)]) for p, lab in zip(fc.paths, fc.labels)}
            views = tuple(v for v in fc.views if v != "raw")
        missing = sorted(p for p, _ in want - have)
        if have <= want and missing == sorted(_unreadable(out, root, missing)):
            for p in missing:
                log(f"warning: {root / p}: skipped, it could not be read when {out} was built -> fix or remove it")
            return out
        log(f"note: {out} does not list the images of {data_root} now: extracting again (incremental)")
        extract_kw["views"] = tuple(dict.fromkeys((*views, *extract_kw.get("views", ()))))
    if preprocess is not None:  # the model's preprocessing (default: extract's, v1)
        extract_kw["preprocess"] = preprocess
    extract(data_root, out, backbone, log=log, progress=progress, **extract_kw)
    with FeatureCache(out) as fc:
        have = {(p, fc.classes[int(lab)]) for p, lab in zip(fc.paths, fc.labels)}
    _record_unreadable(out, root, sorted(p for p, _ in want - have))
    return out


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _unreadable_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".unreadable.json")


def _record_unreadable(cache: Path, root: Path, paths) -> None:
    """Beside the cache: the folder's files the extraction skipped, with their size and mtime."""
    import json

    from busi_lite.common.atomic import write_text

    side = _unreadable_path(cache)
    if paths or side.exists():
        write_text(side, json.dumps({p: _stamp(root / p) for p in paths}, indent=1))


def _unreadable(cache: Path, root: Path, paths) -> list[str]:
    """Those of ``paths`` recorded as unreadable beside ``cache`` and unchanged since."""
    import json

    try:
        known = json.loads(_unreadable_path(cache).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(known, dict):
        return []
    return [p for p in paths if p in known and known[p] is not None and known[p] == _stamp(root / p)]


def _card_preprocessing(card) -> tuple:
    return getattr(card, "preprocess_version", None), getattr(card, "preprocess", None)


def _cache_preprocessing(cache) -> tuple:
    return cache.attrs.get("preprocess_version"), cache.attrs.get("preprocess")


def check_compatible(model, cache) -> None:
    """Refuse a cache from another backbone or preprocessing than the model's."""
    model.check_backbone(cache.backbone_sha256, f"cache {cache.path}")
    want, got = _card_preprocessing(model.card), _cache_preprocessing(cache)
    if want != got:
        raise ExternalError(f"cache {cache.path} was made with preprocessing {got}, the model with {want}",
                            "extract the folder's features again with the model's preprocessing (into another "
                            "cache file, or with force)", param="cache")


def is_training_cache(model, cache) -> bool:
    """True when ``cache`` gives the split the model (or one of its training sources) was trained on."""
    sp = model.card.split
    if not len(cache):
        return False
    got = cache.split(int(sp.seed), float(sp.test_fraction)).digest(cache.paths)
    return got == sp.digest or any(got == s.split_digest for s in model.card.sources or ())


def check_not_training(model, cache) -> None:
    if is_training_cache(model, cache):
        raise ExternalError(f"cache {cache.path} holds the images the model was trained on (split {model.card.split.digest}):"
                            " its images are not external", "evaluate the model on its held-out split instead "
                            "(the plain evaluation, without a data folder)", param="data")


@dataclass
class CachePredictions:
    """The model's predictions on every image of a cache (raw view).
    proba [N,C] (model classes), lesion [N,G*G] | None, ood [N] | None,
    y [N] int: each image's folder class as an index into the MODEL's classes."""
    proba: np.ndarray
    lesion: np.ndarray | None
    ood: np.ndarray | None
    y: np.ndarray


def class_map(model_classes, dataset_classes) -> np.ndarray:
    """[len(dataset_classes)] index of each folder class among the model's classes (by name)."""
    missing = [c for c in dataset_classes if c not in model_classes]
    if missing:
        raise ExternalError(f"the folder has class(es) {missing} that the model does not know "
                            f"(model classes: {', '.join(model_classes)})",
                            "evaluate only folders whose classes the model predicts", param="data")
    return np.array([list(model_classes).index(c) for c in dataset_classes], dtype=np.int64)


def predict_cache(model, cache) -> CachePredictions:
    """Compatibility checks, then the model's predictions on every cached image (raw view;
    with the model's flip averaging, the mean with the cached 'flip' view)."""
    check_compatible(model, cache)
    if MALIGNANT not in model.classes:
        raise ExternalError(f"the model has no '{MALIGNANT}' class ({', '.join(model.classes)})",
                            "use a model that predicts malignant", param="model")
    cmap = class_map(model.classes, cache.classes)
    if model.flip and "flip" not in cache.views:  # flip averaging needs the mirrored inputs' features
        raise ExternalError(f"the model averages each image with its mirror, cache {cache.path} has no 'flip' view",
                            "extract the folder again with the flip view (the default views)", param="cache")
    probas, lesions, pooled = [], [], []
    for start in range(0, len(cache), BATCH):
        rows = np.arange(start, min(start + BATCH, len(cache)))
        r = model.predict_features(cache.spatial("raw", rows),
                                   cache.spatial("flip", rows) if model.flip else None)
        probas.append(r["proba"])
        pooled.append(r["pooled"])
        lesions.append(r["lesion"])
    if not probas:
        raise ExternalError(f"cache {cache.path} holds no images", "give a folder with images", param="data")
    proba = np.concatenate(probas).astype(np.float64)
    lesion = None if lesions[0] is None else np.concatenate(lesions)
    ood = model.ood.score(np.concatenate(pooled)) if model.ood is not None else None
    return CachePredictions(proba, lesion, ood, cmap[cache.labels])


# ---------------------------------------------------------------- evaluation

def evaluate_external(model, cache, *, threshold_malignant: float | None = None,
                      flag_config: FlagConfig | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0,
                      data_root=None, per_image: bool = True) -> ExternalEvaluation:
    """``model`` (busi_lite.model.model.Model) on every image of ``cache`` (features.FeatureCache)."""
    if threshold_malignant is not None and not (isinstance(threshold_malignant, (int, float))
                                                and 0 <= threshold_malignant <= 1):
        raise ExternalError(f"threshold_malignant must be within [0, 1], got {threshold_malignant!r}",
                            "give a probability", param="threshold_malignant")
    flag_config = flag_config if flag_config is not None else FlagConfig()
    check_not_training(model, cache)
    pr = predict_cache(model, cache)
    classes = list(model.classes)
    mal = classes.index(MALIGNANT)
    y, proba = pr.y, pr.proba
    y_mal = y == mal
    p_mal = proba[:, mal]
    t_op = threshold_malignant if threshold_malignant is not None else model.card.calibration.malignant_threshold
    pred = proba.argmax(axis=1)
    alert = p_mal >= t_op
    notes = []
    n_mal = int(y_mal.sum())
    if n_mal == 0 or n_mal == len(y):
        notes.append("the folder has only one of malignant / not malignant: AUC and some rates are undefined")
    auc = M.roc_auc(y_mal, p_mal)
    lo, hi = M.bootstrap_auc_interval(y_mal, p_mal, n_resamples, seed)
    test_paths = set(model.card.test_predictions.path)
    shared = sum(1 for p in cache.paths if p in test_paths)
    if shared:
        notes.append(f"{shared} image(s) have the same relative path as held-out test images of the model: if this "
                     "folder is (part of) its training dataset, these figures are not external")
    site = getattr(model.card, "site", None)
    if site is not None and site.data_root and data_root is not None and \
            Path(site.data_root).resolve() == Path(data_root).resolve():
        notes.append(f"the model's malignant threshold was chosen on this folder (site calibration '{site.site}'): "
                     "the operating-point figures are in-sample")
    notes += site_notes(model, cache)
    dcls = list(cache.classes)
    conf = np.zeros((len(dcls), len(classes)), np.int64)
    np.add.at(conf, (cache.labels, pred), 1)

    thr = thresholds(model, flag_config)
    flags, checks = compute_flags(proba, pr.lesion, pr.ood, classes, thr, flag_config, pixel=None)
    evidence = _flag_evidence(model, cache, flags, checks, y, pred, alert, thr, t_op)
    rows = None
    if per_image:
        rows = [ImageRow(cache.paths[i], dcls[int(cache.labels[i])],
                         {c: round(float(proba[i, j]), 5) for j, c in enumerate(classes)}, classes[int(pred[i])],
                         bool(alert[i]), [f.name for f in flags[i]]) for i in range(len(y))]
    return ExternalEvaluation(
        model=str(model.card.config.name), data_root=None if data_root is None else str(data_root),
        cache=str(cache.path), backbone_sha256=cache.backbone_sha256,
        preprocess_version=str(_cache_preprocessing(cache)[0]), dataset_classes=dcls, model_classes=classes,
        counts={c: int((cache.labels == k).sum()) for k, c in enumerate(dcls)}, n=len(y), n_malignant=n_mal,
        auc=auc, auc_lo=lo, auc_hi=hi,
        auc_interval=f"stratified bootstrap, {n_resamples} resamples, seed {seed}, 2.5-97.5 percentiles",
        n_resamples=int(n_resamples), seed=int(seed),
        argmax=OperatingPoint.of(y_mal, pred == mal, None), operating_point=OperatingPoint.of(y_mal, alert, t_op),
        confusion=conf.tolist(), flags=evidence, notes=notes, per_image=rows)


def site_notes(model, cache) -> list[str]:
    """The batch site-shift check (busi_lite.serving.shift) on the folder's images: the warning when
    they look like no training site; a note naming the training site(s) they look like otherwise."""
    coords = image_coords(model, cache.pooled("raw")) if len(cache) else None
    if coords is None:
        return []
    check = check_coords(model, list(coords))
    if not check.checked:
        return []
    if check.shifted:
        return [SHIFT_WARNING]
    like = [s["name"] for s in check.sites if s["statistic"] <= s["threshold"]]
    return [f"these images look like the model's training site(s) {', '.join(like)}: if they are (part of) its "
            "training data, these figures are not external (not zero-shot)"]


def _flag_evidence(model, cache, flags, checks, y, pred, alert, thr, t_op) -> FlagEvidence:
    """flag_eval's evidence table, on every image of the folder."""
    mal = list(model.classes).index(MALIGNANT)
    err = pred != y
    miss = (y == mal) & (pred != mal)
    miss_op = (y == mal) & ~alert
    per_flag, any_flag = flag_table(flags, checks, err, miss, miss_op)
    op = OperatingPoint.of(y == mal, alert, t_op)
    n = len(y)
    return FlagEvidence(
        model=str(model.card.config.name), cache=str(cache.path), split_digest="all images (external folder)",
        n=int(n), n_errors=int(err.sum()), accuracy=float((~err).sum() / n) if n else math.nan,
        n_missed_malignant_argmax=int(miss.sum()), n_missed_malignant_op=int(miss_op.sum()),
        thresholds=dict(thr, malignant=float(t_op)), flags=per_flag, any_flag=any_flag,
        operating_point={"threshold": float(t_op), "recall": op.recall.value, "far": op.far.value,
                         "precision": op.precision.value, "tp": op.recall.k, "fn": op.recall.n - op.recall.k,
                         "fp": op.far.k, "tn": op.far.n - op.far.k})


def csv_text(ev: ExternalEvaluation) -> str:
    """Per-image CSV: path, true class, p_<model class>..., label, alert (0/1), flags (;-separated)."""
    import csv
    import io

    from busi_lite.common.csvcell import safe_cell

    if ev.per_image is None:
        raise ExternalError("this evaluation kept no per-image rows", "evaluate with per_image=True")
    head = ["path", "true"] + [f"p_{c}" for c in ev.model_classes] + ["label", "alert", "flags"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in ev.per_image:
        w.writerow([safe_cell(v) for v in [r.path, r.true] + [f"{r.proba[c]:.5f}" for c in ev.model_classes]
                    + [r.label, int(r.alert), ";".join(r.flags)]])
    return buf.getvalue()
