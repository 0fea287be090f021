"""The model card: everything about a trained model except its arrays (the NAME.json sidecar).

Records as in :mod:`busi_lite.model.records`; ``ModelCard.from_json`` validates strictly (types,
finite thresholds, a class list matching the head's outputs, integer head sizes), so a
damaged or hand-edited sidecar is refused at load, before any array is read.

Optional ``box`` section (:class:`BoxInfo`): the model's lesion-box head (busi_lite.heads.box),
its classes (benign, malignant), its own malignant threshold (calibrated on out-of-fold
training predictions), how it was trained and its held-out figures. Absent = no box mode.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from busi_lite.common.constants import CLASSES
from busi_lite.common.errors import ConfigError
from busi_lite.features.spec import DEFAULT, BackboneSpec, check_stored
from busi_lite.model.config import Config
from busi_lite.model.records import (
    SCHEMA_VERSION,
    Calibration,
    Metrics,
    Record,
    SelectionResult,
    SiteCalibration,
    SplitInfo,
    check_schema,
    field_error,
    read_config,
    read_field,
    read_history,
    read_int,
    read_list,
    read_num,
    read_obj,
    read_str,
)
from busi_lite.model.shift import ShiftInfo

__all__ = ["FORMAT", "BoxInfo", "ModelCard", "OODInfo", "SourceInfo", "TestMetrics", "TestPredictions"]


# ---------------------------------------------------------------- model card

FORMAT = 1  # weights file layout (NAME.npz + NAME.json)


@dataclass
class TestMetrics(Record):
    SCHEMA: ClassVar[str] = f"test_metrics/{SCHEMA_VERSION}"
    test_argmax: Metrics
    test_operating_point: Metrics

    @classmethod
    def from_json(cls, d, where="metrics") -> "TestMetrics":
        d = read_obj(d, where)
        return cls(*(Metrics.from_json(read_field(d, k, where), f"{where}.{k}") for k in ("test_argmax", "test_operating_point")))


@dataclass
class TestPredictions(Record):
    """The held-out test images' probabilities: path [n], y [n] int, proba [n,C] (rounded to 5 decimals)."""
    SCHEMA: ClassVar[str] = f"test_predictions/{SCHEMA_VERSION}"
    path: list
    y: np.ndarray
    proba: np.ndarray

    @classmethod
    def from_json(cls, d, where="test_predictions", n_classes=None) -> "TestPredictions":
        d = read_obj(d, where)
        path, y, proba = read_list(d, "path", where), read_list(d, "y", where), read_list(d, "proba", where)
        if not all(isinstance(p, str) for p in path) or not all(isinstance(v, int) and not isinstance(v, bool) for v in y):
            field_error(where, "path must be strings and y integers")
        try:
            proba = np.asarray(proba, dtype=np.float64)
        except (TypeError, ValueError):
            field_error(where, "proba must be a list of number lists")
        if not len(path) == len(y) == len(proba) or (len(proba) and (proba.ndim != 2 or not np.isfinite(proba).all())):
            field_error(where, "path, y and proba must have one finite entry per test image")
        if n_classes is not None and len(proba) and proba.shape[1] != n_classes:
            field_error(where, f"proba has {proba.shape[1]} columns, the model {n_classes} classes")
        return cls(path, np.asarray(y, np.int64), proba)


@dataclass
class OODInfo(Record):
    SCHEMA: ClassVar[str] = f"ood/{SCHEMA_VERSION}"
    resid_var: float
    threshold: float

    @classmethod
    def from_json(cls, d, where="ood") -> "OODInfo":
        d = read_obj(d, where)
        rv, thr = read_num(d, "resid_var", where, finite=True), read_num(d, "threshold", where, finite=True)
        if rv <= 0:
            field_error(where, f"resid_var must be > 0, got {rv}")
        return cls(rv, thr)


@dataclass
class BoxInfo(Record):
    """The lesion-box head of a model (the card's ``box`` section); arrays ``box_head.*`` in the .npz."""
    SCHEMA: ClassVar[str] = f"box_head/{SCHEMA_VERSION}"
    head: dict                    # BoxHead.config(): kind "box", n_features, n_classes 2, C
    classes: list                 # ["benign", "malignant"]
    malignant_threshold: float    # p(malignant) of the box head at or above which box_malignant_alert is set
    target_recall: float          # the OOF recall that threshold was chosen for
    oof_recall: float             # reached out of fold (training images, jittered boxes)
    oof_far: float
    oof_auc: float
    oof_auc_mirror: float         # OOF AUC with the mirrored pair averaged in, and without (chooses ``flip``)
    oof_auc_no_mirror: float
    calibration_view: str         # box view the OOF predictions used (a jittered, hand-drawn-like box)
    n_train_images: int           # lesion images (benign + malignant) of the training split
    n_train_samples: int
    train_views: list             # box views trained on (each paired with raw, or flip for *_flip)
    flip: bool                    # prediction averages [raw, crop] and [mirror, mirrored crop]
    margin: float                 # share of the box's width/height added on each side before the resize
    test_auc: dict                # {box view: benign-vs-malignant AUC on the held-out lesion images}
    n_test: int

    @classmethod
    def from_json(cls, d, where="box") -> "BoxInfo":
        from busi_lite.heads.box import BoxHead

        d = read_obj(d, where)
        check_schema(cls, d, where)
        head = read_obj(read_field(d, "head", where), f"{where}.head")
        if head.get("kind") != BoxHead.kind:
            field_error(f"{where}.head", f"kind must be {BoxHead.kind!r}, got {head.get('kind')!r}")
        read_int(head, "n_features", f"{where}.head", 1)
        if read_int(head, "n_classes", f"{where}.head", 1) != 2:
            field_error(f"{where}.head", "n_classes must be 2 (benign, malignant)")
        if read_num(head, "C", f"{where}.head", finite=True) <= 0:
            field_error(f"{where}.head", "C must be > 0")
        classes = read_list(d, "classes", where)
        if classes != list(BoxHead.classes):
            field_error(where, f"classes must be {list(BoxHead.classes)}, got {classes!r}")
        thr = read_num(d, "malignant_threshold", where, finite=True)
        if not 0 <= thr <= 1:
            field_error(where, f"malignant_threshold must be within [0, 1], got {thr}")
        views = read_list(d, "train_views", where)
        auc = read_obj(read_field(d, "test_auc", where), f"{where}.test_auc")
        if not views or not all(isinstance(v, str) and v.startswith("box") for v in views + list(auc)):
            field_error(where, "train_views and test_auc must name box views")
        flip = read_field(d, "flip", where)
        if not isinstance(flip, bool):
            field_error(where, f"flip must be true or false, got {flip!r}")
        return cls(head=dict(head), classes=classes, malignant_threshold=thr,
                   target_recall=read_num(d, "target_recall", where, finite=True),
                   oof_recall=read_num(d, "oof_recall", where), oof_far=read_num(d, "oof_far", where),
                   oof_auc=read_num(d, "oof_auc", where), oof_auc_mirror=read_num(d, "oof_auc_mirror", where),
                   oof_auc_no_mirror=read_num(d, "oof_auc_no_mirror", where),
                   calibration_view=read_str(d, "calibration_view", where),
                   n_train_images=read_int(d, "n_train_images", where, 1), n_train_samples=read_int(d, "n_train_samples", where, 1),
                   train_views=views, flip=flip, margin=read_num(d, "margin", where, finite=True),
                   test_auc={str(k): read_num(auc, k, f"{where}.test_auc") for k in auc},
                   n_test=read_int(d, "n_test", where, 0))


@dataclass
class SourceInfo(Record):
    """One training source of a model (the card's ``sources`` list): what it is, what it held,
    how much it counted and the model's figures on ITS held-out patients (group-aware split)."""
    SCHEMA: ClassVar[str] = f"source/{SCHEMA_VERSION}"
    name: str
    kind: str                     # a dataset source kind (folder, manifest) or "cache"
    location: str                 # the folder / manifest / cache given
    counts: dict                  # {class: images}, the whole source
    files_digest: str             # SHA-256 over its sorted (path, content hash) list: which images
    split_digest: str             # its train/test split (data.Split.digest)
    n_train: int
    n_test: int
    weight: float                 # share of the total training weight (the sources' shares sum to 1)
    test_auc: float               # malignant vs rest on its held-out images, Hanley-McNeil 95 % interval
    test_auc_lo: float
    test_auc_hi: float
    test_recall: float            # at the model's operating point (calibration.malignant_threshold)
    test_far: float
    box_test_auc: float | None = None   # the box head on its held-out lesion images (true box)
    weighting: str = "balanced"   # how the weights were set: balanced | by-count (training.sources)

    @classmethod
    def from_json(cls, d, where="source") -> "SourceInfo":
        d = read_obj(d, where)
        counts = read_obj(read_field(d, "counts", where), f"{where}.counts")
        box = d.get("box_test_auc")
        return cls(name=read_str(d, "name", where), kind=read_str(d, "kind", where),
                   location=read_str(d, "location", where),
                   counts={str(k): read_int(counts, k, f"{where}.counts", 0) for k in counts},
                   files_digest=read_str(d, "files_digest", where), split_digest=read_str(d, "split_digest", where),
                   n_train=read_int(d, "n_train", where, 0), n_test=read_int(d, "n_test", where, 0),
                   weight=read_num(d, "weight", where, finite=True),
                   **{k: read_num(d, k, where) for k in ("test_auc", "test_auc_lo", "test_auc_hi", "test_recall",
                                                         "test_far")},
                   box_test_auc=None if box is None else read_num(d, "box_test_auc", where),
                   weighting=read_str(d, "weighting", where, default="balanced"))


@dataclass
class ModelCard(Record):
    """Everything about a trained model except its arrays (the NAME.json sidecar)."""
    SCHEMA: ClassVar[str] = "model_card/2"  # 2: config with per-head params (busi_lite.model.config)
    READS: ClassVar[tuple] = ("model_card/1",)  # the flat config, read by Config.from_json
    DOCUMENT: ClassVar[bool] = True
    _omit_none: ClassVar[tuple] = ("selection", "ood", "weights_sha256", "warnings", "site", "box", "backbone",
                                   "sources", "shift")
    config: Config
    classes: list
    backbone_sha256: str
    backbone_file: str | None
    preprocess_version: str
    feature_shape: list
    package_version: str
    split: SplitInfo
    calibration: Calibration
    metrics: TestMetrics
    test_predictions: TestPredictions
    history: dict
    train_seconds: float
    total_seconds: float
    selection: SelectionResult | None = None
    format: int = FORMAT
    head: dict = field(default_factory=dict)   # head.config(): kind, n_features, n_hidden, n_classes, ...
    ood: OODInfo | None = None
    weights_sha256: str | None = None  # SHA-256 of NAME.npz's bytes (set by Model.save, checked by Model.load)
    warnings: list | None = None       # loud caveats found at training, e.g. an out-of-fold AUC at chance
    site: SiteCalibration | None = None  # threshold re-chosen on another site's cases (busi_lite.evaluation.sitecal)
    box: BoxInfo | None = None         # optional lesion-box head (busi_lite.heads.box); arrays box_head.*
    backbone: BackboneSpec | None = None  # the backbone's spec (features.spec); None: features.spec.DEFAULT
    sources: list | None = None        # [SourceInfo] of a model trained on several sources (training.sources)
    shift: ShiftInfo | None = None     # training sites' feature statistics for the batch site-shift check

    @property
    def backbone_spec(self) -> BackboneSpec:
        """The spec of the backbone this model's features come from (DEFAULT when the card names none)."""
        return self.backbone if self.backbone is not None else DEFAULT

    def trained_on(self) -> list[str]:
        """One line per training source ("busbra-dev: benign 367, malignant 165; weight 0.50"); [] when
        the card does not name its sources (a model trained on one cache with the paper's recipe)."""
        return [f"{s.name}: " + ", ".join(f"{c} {n}" for c, n in s.counts.items()) + f"; weight {s.weight:.2f}"
                for s in self.sources or ()]

    @classmethod
    def _record_fields(cls) -> dict:
        return {"split": SplitInfo, "calibration": Calibration, "metrics": TestMetrics,
                "test_predictions": TestPredictions, "selection": SelectionResult, "ood": OODInfo,
                "site": SiteCalibration, "box": BoxInfo, "shift": ShiftInfo}

    @classmethod
    def from_json(cls, d, where="model card") -> "ModelCard":
        """Strict: types, finite thresholds, class list matching the head's outputs, head sizes integers."""
        from busi_lite.heads import get_head

        d = read_obj(d, where)
        check_schema(cls, d, where)
        classes = read_list(d, "classes", where)
        if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            field_error(where, f"classes must be distinct names, got {classes!r}")
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or "malignant" not in classes:      # a renamed class would silently switch the alert off
            field_error(where, f"classes must be among {list(CLASSES)} and include 'malignant', got {classes!r}")
        shape = read_list(d, "feature_shape", where)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            field_error(where, f"feature_shape must be positive integers, got {shape!r}")
        try:
            spec = check_stored(d.get("backbone"))
        except ConfigError as e:
            field_error(f"{where}.backbone", e.what, e.fix or "retrain the model")
        if shape != spec.feature_shape:
            field_error(where, f"feature_shape {shape} is not backbone {spec.name!r}'s {spec.feature_shape}", "retrain")
        if not spec.accepts(d.get("preprocess_version")):
            field_error(where, f"preprocessing {d.get('preprocess_version')!r} is not one backbone {spec.name!r} "
                        f"accepts ({', '.join(spec.preprocessings)})", "retrain")
        head = read_obj(read_field(d, "head", where), f"{where}.head")
        try:
            get_head(head.get("kind"))
        except ConfigError as e:
            field_error(f"{where}.head", str(e))
        for k in ("n_features", "n_classes") + (("n_hidden",) if "n_hidden" in head else ()):  # logreg: none
            read_int(head, k, f"{where}.head", 1)
        if head["n_classes"] != len(classes):
            field_error(f"{where}.head", f"n_classes {head['n_classes']} != {len(classes)} class names {classes}")
        if not shape or head["n_features"] != shape[-1]:
            field_error(f"{where}.head", f"n_features {head['n_features']} does not match feature_shape {shape}")
        for k, v in head.items():
            if k != "kind" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                field_error(f"{where}.head", f"{k} must be a finite number, got {v!r}")
        sel, ood = d.get("selection"), d.get("ood")
        sha = read_str(d, "weights_sha256", where, none_ok=True, default=None)
        if sha is not None and not re.fullmatch("[0-9a-f]{64}", sha):
            field_error(where, f"weights_sha256 must be 64 hex digits, got {sha!r}")
        warns = read_list(d, "warnings", where) if d.get("warnings") is not None else None
        if warns is not None and not all(isinstance(w, str) for w in warns):
            field_error(where, "warnings must be a list of strings")
        card = cls(
            config=read_config(d, "config", where), classes=classes, backbone_sha256=read_str(d, "backbone_sha256", where),
            backbone_file=read_str(d, "backbone_file", where, none_ok=True, default=None),
            preprocess_version=read_str(d, "preprocess_version", where), feature_shape=shape,
            package_version=read_str(d, "package_version", where),
            split=SplitInfo.from_json(read_field(d, "split", where), f"{where}.split"),
            calibration=Calibration.from_json(read_field(d, "calibration", where), f"{where}.calibration"),
            metrics=TestMetrics.from_json(read_field(d, "metrics", where), f"{where}.metrics"),
            test_predictions=TestPredictions.from_json(read_field(d, "test_predictions", where), f"{where}.test_predictions",
                                                       len(classes)),
            history=read_history(d, "history", where), train_seconds=read_num(d, "train_seconds", where),
            total_seconds=read_num(d, "total_seconds", where),
            selection=None if sel is None else SelectionResult.from_json(sel, f"{where}.selection"),
            format=read_int(d, "format", where), head=dict(head),
            ood=None if ood is None else OODInfo.from_json(ood, f"{where}.ood"), weights_sha256=sha, warnings=warns,
            backbone=None if d.get("backbone") is None else spec)
        site = d.get("site")
        card.site = None if site is None else SiteCalibration.from_json(site, f"{where}.site")
        box = d.get("box")
        card.box = None if box is None else BoxInfo.from_json(box, f"{where}.box")
        src = d.get("sources")
        card.sources = None if src is None else [SourceInfo.from_json(x, f"{where}.sources[{i}]")
                                                 for i, x in enumerate(read_list(d, "sources", where))]
        shift = d.get("shift")
        card.shift = None if shift is None else ShiftInfo.from_json(shift, f"{where}.shift")
        if card.config.head != head["kind"]:
            field_error(where, f"config.head {card.config.head!r} != head.kind {head['kind']!r}")
        return card
