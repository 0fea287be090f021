"""Typed, versioned records: what crosses module borders and what is written as JSON.

Every record has ``to_json() -> dict`` (JSON-able: lists, not arrays) and
``from_json(d, where=...)`` which validates types strictly and raises
:class:`RecordError` naming the file/field at fault. Documents (ModelCard,
RunResult, SweepResult) write ``"schema": SCHEMA``; a document
with another schema is refused at load, a document WITHOUT one is read as the
current version (the committed weights/busi_lite_default.json has none).

Records also allow read access by key (``r["test"]["accuracy"]``, ``.get``, ``in``),
the same paths as in their JSON; attributes are the typed access.

Also here: :func:`check_split`, the one check that a cache still gives the split a
model or run was made on (used by serving, reports and sweep resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.common.jsonio import jsonable
from busi_lite.model.config import Config

SCHEMA_VERSION = 1


class RecordError(BusiError, ValueError):
    """A stored record does not have the expected schema or types."""


class SplitMismatch(BusiError):
    """A cache gives another train/test split than the one recorded."""


# ---------------------------------------------------------------- JSON helpers

def field_error(where, what, fix="the file is damaged or from another version: rewrite it with this busi-lite"):
    raise RecordError(f"{where}: {what}", fix)


def read_obj(d, where) -> dict:
    if not isinstance(d, dict):
        field_error(where, f"expected a JSON object, got {type(d).__name__}")
    return d


def read_field(d, key, where, default=...):
    if key not in d:
        if default is ...:
            field_error(where, f"missing field {key!r}")
        return default
    return d[key]


def read_num(d, key, where, finite=False, none_ok=False, default=...):
    v = read_field(d, key, where, default)
    if v is None and none_ok:
        return None
    if v is None and not finite:  # strict JSON (busi_lite.common.jsonio) writes NaN as null
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        field_error(where, f"{key} must be a number, got {type(v).__name__}")
    if finite and not math.isfinite(v):
        field_error(where, f"{key} must be finite, got {v!r}")
    return float(v)


def read_int(d, key, where, minimum=None, default=...):
    v = read_field(d, key, where, default)
    if isinstance(v, bool) or not isinstance(v, int):
        field_error(where, f"{key} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        field_error(where, f"{key} must be >= {minimum}, got {v}")
    return v


def read_str(d, key, where, none_ok=False, default=...):
    v = read_field(d, key, where, default)
    if v is None and none_ok:
        return None
    if not isinstance(v, str):
        field_error(where, f"{key} must be a string, got {type(v).__name__}")
    return v


def read_list(d, key, where, default=...) -> list:
    v = read_field(d, key, where, default)
    if not isinstance(v, list):
        field_error(where, f"{key} must be a list, got {type(v).__name__}")
    return v


def read_config(d, key, where) -> Config:
    try:
        return Config.from_json(read_field(d, key, where))
    except ConfigError as e:
        field_error(f"{where}.{key}", str(e))


def check_schema(cls, d, where):
    s = d.get("schema", cls.SCHEMA)  # absent: read as the current version
    if s != cls.SCHEMA and s not in cls.READS:
        raise RecordError(f"{where}: schema {s!r}, this busi-lite reads {cls.SCHEMA!r}",
                          "rewrite the file with this busi-lite version (or use the version that wrote it)")


class Record:
    """Base: to_json over the dataclass fields (None fields listed in _omit_none are left out),
    read access by key, and a schema tag for documents."""
    SCHEMA: ClassVar[str] = ""
    READS: ClassVar[tuple] = ()  # older schemas this version still reads
    DOCUMENT: ClassVar[bool] = False  # writes "schema"
    _omit_none: ClassVar[tuple] = ()

    def to_json(self) -> dict:
        out = {"schema": self.SCHEMA} if self.DOCUMENT else {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in self._omit_none:
                continue
            out[f.name] = jsonable(v)
        return out

    @classmethod
    def _record_fields(cls) -> dict:
        """{field name: record class} for fields holding one record (coerced on item assignment)."""
        return {}


# ---------------------------------------------------------------- metrics

_MAL_FLOATS = ("recall", "mar", "far", "precision")
_MAL_INTS = ("tp", "fn", "fp", "tn")


@dataclass
class Metrics(Record):
    """Evaluation of one set of images (``metrics.summarize`` + optional segmentation)."""
    SCHEMA: ClassVar[str] = f"metrics/{SCHEMA_VERSION}"
    _omit_none: ClassVar[tuple] = ("segmentation",)
    n: int
    accuracy: float
    macro_f1: float
    log_loss: float
    per_class_recall: dict          # {class name: recall}
    confusion: list                 # [C][C] ints, rows true
    malignant: dict                 # {recall, mar, far, precision: float; tp, fn, fp, tn: int}
    malignant_auc: float
    malignant_threshold: float | None = None
    segmentation: dict | None = None  # {dice, iou: float, n: int} (heads with a lesion map)

    @classmethod
    def from_json(cls, d, where="metrics") -> "Metrics":
        d = read_obj(d, where)
        check_schema(cls, d, where)
        pcr = read_obj(read_field(d, "per_class_recall", where), f"{where}.per_class_recall")
        pcr = {str(k): read_num(pcr, k, f"{where}.per_class_recall") for k in pcr}
        conf = read_list(d, "confusion", where)
        if not all(isinstance(r, list) and len(r) == len(conf) and all(isinstance(v, int) for v in r) for r in conf):
            field_error(where, "confusion must be a square list of integer lists")
        mal = read_obj(read_field(d, "malignant", where), f"{where}.malignant")
        mal = {**{k: read_num(mal, k, f"{where}.malignant") for k in _MAL_FLOATS},
               **{k: read_int(mal, k, f"{where}.malignant", 0) for k in _MAL_INTS}}
        seg = d.get("segmentation")
        if seg is not None:
            seg = read_obj(seg, f"{where}.segmentation")
            seg = {"dice": read_num(seg, "dice", f"{where}.segmentation"), "iou": read_num(seg, "iou", f"{where}.segmentation"),
                   "n": read_int(seg, "n", f"{where}.segmentation", 0)}
        return cls(n=read_int(d, "n", where, 0), accuracy=read_num(d, "accuracy", where), macro_f1=read_num(d, "macro_f1", where),
                   log_loss=read_num(d, "log_loss", where), per_class_recall=pcr, confusion=conf, malignant=mal,
                   malignant_auc=read_num(d, "malignant_auc", where),
                   malignant_threshold=read_num(d, "malignant_threshold", where, none_ok=True, default=None),
                   segmentation=seg)


@dataclass
class Calibration(Record):
    """Thresholds chosen on out-of-fold training predictions (see experiments.calibrate)."""
    SCHEMA: ClassVar[str] = f"calibration/{SCHEMA_VERSION}"
    _omit_none: ClassVar[tuple] = ("lesion_threshold", "lesion_oof_balanced_accuracy", "lesion_absent",
                                   "lesion_present", "mismatch_quantile")
    malignant_threshold: float
    target_recall: float
    oof_far_at_threshold: float
    low_confidence: float
    error_share: float
    ood_threshold: float
    ood_quantile: float
    lesion_threshold: float | None = None
    lesion_oof_balanced_accuracy: float | None = None
    lesion_absent: float | None = None
    lesion_present: float | None = None
    mismatch_quantile: float | None = None

    @classmethod
    def from_json(cls, d, where="calibration") -> "Calibration":
        """Thresholds must be finite (a NaN threshold would silently switch a flag off)."""
        d = read_obj(d, where)
        check_schema(cls, d, where)
        may_be_nan = ("oof_far_at_threshold", "lesion_oof_balanced_accuracy")  # statistics, not thresholds
        kw = {}
        for f in fields(cls):
            optional = f.name in cls._omit_none
            kw[f.name] = read_num(d, f.name, where, finite=f.name not in may_be_nan, none_ok=optional,
                              default=None if optional else ...)
            v = kw[f.name]
            if v is not None and math.isfinite(v) and not (v >= 0 if f.name == "ood_threshold" else 0 <= v <= 1):
                field_error(where, f"{f.name} must be {'>= 0' if f.name == 'ood_threshold' else 'within [0, 1]'}, "
                                   f"got {v!r}")
        return cls(**kw)


# ---------------------------------------------------------------- splits

def check_split(cache, seed: int, test_fraction: float, digest: str | None, what: str = "the model"):
    """The ONE split-digest check. Rebuild split ``seed`` of ``cache``; if ``digest`` is given and
    differs, the cache holds other images than the ones ``what`` was made on -> SplitMismatch.
    Returns the rebuilt data.Split."""
    sp = cache.split(int(seed), float(test_fraction))
    got = sp.digest(cache.paths)
    if digest and got != digest:
        raise SplitMismatch(f"cache {cache.path} gives split {got} for seed {seed}, {what} was made on split "
                            f"{digest}: the cache holds other images, so its 'test' images may have been used "
                            "for training", "use the cache it was made with (or retrain on this cache)")
    return sp


@dataclass
class SplitInfo(Record):
    SCHEMA: ClassVar[str] = f"split/{SCHEMA_VERSION}"
    seed: int
    test_fraction: float
    digest: str
    n_train_images: int
    n_test: int
    excluded: list

    def check(self, cache, what: str = "the model"):
        """-> the rebuilt data.Split of ``cache``; SplitMismatch when the cache gives another split."""
        return check_split(cache, self.seed, self.test_fraction, self.digest, what)

    @classmethod
    def from_json(cls, d, where="split") -> "SplitInfo":
        d = read_obj(d, where)
        excluded = read_list(d, "excluded", where)
        if not all(isinstance(p, str) for p in excluded):
            field_error(where, "excluded must be a list of paths")
        tf = read_num(d, "test_fraction", where, finite=True)
        if not 0 < tf < 1:
            field_error(where, f"test_fraction must be in (0, 1), got {tf}")
        return cls(read_int(d, "seed", where), tf, read_str(d, "digest", where), read_int(d, "n_train_images", where, 0),
                   read_int(d, "n_test", where, 0), excluded)


# ---------------------------------------------------------------- runs and sweeps

def read_history(d, key, where) -> dict:
    h = read_obj(read_field(d, key, where), f"{where}.{key}")
    for k, v in h.items():
        if k == "n_train":
            read_int(h, k, f"{where}.{key}", 0)
        elif not (isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            field_error(f"{where}.{key}", f"{k} must be a list of numbers")
    return h


@dataclass
class RunResult(Record):
    """One training run: config trained on split ``seed`` (``fraction`` of its training images),
    evaluated once on the split's test images (raw view)."""
    SCHEMA: ClassVar[str] = f"run/{SCHEMA_VERSION}"
    DOCUMENT: ClassVar[bool] = True
    config: Config
    seed: int
    fraction: float
    split: str                    # split digest
    n_train_images: int
    n_train_samples: int
    n_test: int
    n_excluded: int
    train_seconds: float
    test: Metrics
    history: dict
    test_fraction: float = 0.15

    @property
    def key(self) -> tuple:
        return (self.config.name, self.fraction, self.seed)

    @classmethod
    def from_json(cls, d, where="run") -> "RunResult":
        d = read_obj(d, where)
        check_schema(cls, d, where)
        return cls(read_config(d, "config", where), read_int(d, "seed", where), read_num(d, "fraction", where, finite=True),
                   read_str(d, "split", where), read_int(d, "n_train_images", where, 0), read_int(d, "n_train_samples", where, 0),
                   read_int(d, "n_test", where, 0), read_int(d, "n_excluded", where, 0), read_num(d, "train_seconds", where),
                   Metrics.from_json(read_field(d, "test", where), f"{where}.test"), read_history(d, "history", where),
                   read_num(d, "test_fraction", where, finite=True, default=0.15))


@dataclass
class Interval(Record):
    """Mean and 95 % interval over seeds (nan when undefined)."""
    SCHEMA: ClassVar[str] = f"interval/{SCHEMA_VERSION}"
    mean: float
    lo: float
    hi: float

    @classmethod
    def from_json(cls, d, where="interval") -> "Interval":
        d = read_obj(d, where)
        return cls(read_num(d, "mean", where), read_num(d, "lo", where), read_num(d, "hi", where))


@dataclass
class SummaryRow(Record):
    """Runs of one (config, fraction) aggregated: Interval of each key metric, the paper's figures.
    JSON: {name, fraction, seeds, config, <metric>: {mean, lo, hi} ..., paper?}."""
    SCHEMA: ClassVar[str] = f"summary_row/{SCHEMA_VERSION}"
    name: str
    fraction: float
    seeds: list
    config: Config
    metrics: dict                 # {metric name: Interval}
    paper: dict | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "fraction": self.fraction, "seeds": list(self.seeds), "config": self.config.to_json()}
        out.update({k: v.to_json() for k, v in self.metrics.items()})
        if self.paper is not None:
            out["paper"] = dict(self.paper)
        return out

    @classmethod
    def from_json(cls, d, where="summary row") -> "SummaryRow":
        d = read_obj(d, where)
        known = {"schema", "name", "fraction", "seeds", "config", "paper"}
        metrics = {k: Interval.from_json(v, f"{where}.{k}") for k, v in d.items() if k not in known}
        paper = d.get("paper")
        if paper is not None:
            paper = {k: read_num(read_obj(paper, f"{where}.paper"), k, f"{where}.paper") for k in paper}
        return cls(read_str(d, "name", where), read_num(d, "fraction", where, finite=True), read_list(d, "seeds", where),
                   read_config(d, "config", where), metrics, paper)


@dataclass
class SweepResult(Record):
    """Every run of a sweep and their summary, with the cache they came from."""
    SCHEMA: ClassVar[str] = "sweep/2"  # 2: configs with per-head params (busi_lite.model.config)
    READS: ClassVar[tuple] = ("sweep/1",)  # flat configs, read by Config.from_json
    DOCUMENT: ClassVar[bool] = True
    results: list                 # [RunResult]
    summary: list                 # [SummaryRow]
    cache: str
    backbone_sha256: str
    package_version: str

    @classmethod
    def from_json(cls, d, where="sweep") -> "SweepResult":
        d = read_obj(d, where)
        check_schema(cls, d, where)
        return cls([RunResult.from_json(r, f"{where}.results[{i}]") for i, r in enumerate(read_list(d, "results", where))],
                   [SummaryRow.from_json(r, f"{where}.summary[{i}]") for i, r in enumerate(read_list(d, "summary", where))],
                   read_str(d, "cache", where), read_str(d, "backbone_sha256", where), read_str(d, "package_version", where))


# ---------------------------------------------------------------- model selection

@dataclass
class SelectionRow(Record):
    """One candidate of ``select``: out-of-fold scores on the training split, and its size
    (trainable parameters; used to prefer the simpler of tied candidates)."""
    SCHEMA: ClassVar[str] = f"selection_row/{SCHEMA_VERSION}"
    _omit_none: ClassVar[tuple] = ("n_params",)
    name: str
    config: Config
    oof_recall_at_far: float
    oof_auc: float
    oof_accuracy: float
    far_cap: float
    seconds: float
    n_params: int | None = None

    @classmethod
    def from_json(cls, d, where="selection row") -> "SelectionRow":
        d = read_obj(d, where)
        n_params = d.get("n_params")
        return cls(read_str(d, "name", where), read_config(d, "config", where), read_num(d, "oof_recall_at_far", where),
                   read_num(d, "oof_auc", where), read_num(d, "oof_accuracy", where), read_num(d, "far_cap", where),
                   read_num(d, "seconds", where), None if n_params is None else read_int(d, "n_params", where, 1))


@dataclass
class SelectionResult(Record):
    """How the default model was chosen: the criterion and the ranking, best first.
    ``margin``: candidates within this much out-of-fold recall of the best were tied;
    ``tied``: their names (the simplest of them won). Both absent in older cards."""
    SCHEMA: ClassVar[str] = f"selection/{SCHEMA_VERSION}"  # versioned by the model card that holds it
    _omit_none: ClassVar[tuple] = ("margin", "tied")
    criterion: str
    seed: int
    ranking: list                 # [SelectionRow]
    margin: float | None = None
    tied: list | None = None      # [name], best first

    @property
    def winner(self) -> SelectionRow:
        return self.ranking[0]

    @classmethod
    def from_json(cls, d, where="selection") -> "SelectionResult":
        d = read_obj(d, where)
        check_schema(cls, d, where)
        tied = d.get("tied")
        if tied is not None and not (isinstance(tied, list) and all(isinstance(t, str) for t in tied)):
            field_error(where, "tied must be a list of names")
        return cls(read_str(d, "criterion", where), read_int(d, "seed", where),
                   [SelectionRow.from_json(r, f"{where}.ranking[{i}]") for i, r in enumerate(read_list(d, "ranking", where))],
                   read_num(d, "margin", where, finite=True, none_ok=True, default=None), tied)


@dataclass
class SiteCalibration(Record):
    """The malignant threshold chosen on a site's labelled cases (the card's ``site`` section)."""
    SCHEMA: ClassVar[str] = f"site_calibration/{SCHEMA_VERSION}"
    _omit_none: ClassVar[tuple] = ("warning", "data_root")
    site: str
    n_cases: int
    n_malignant: int
    target_recall: float
    threshold: float
    recall: float                # reached on the site's cases (in-sample)
    recall_lo: float             # Wilson 95 %
    recall_hi: float
    far: float
    far_lo: float
    far_hi: float
    previous_threshold: float    # the source (training-site) operating point
    previous_target_recall: float
    rule: str
    warning: str | None = None
    data_root: str | None = None

    @classmethod
    def from_json(cls, d, where="site") -> SiteCalibration:
        d = read_obj(d, where)
        check_schema(cls, d, where)
        thr = read_num(d, "threshold", where, finite=True)
        if not 0 <= thr <= 1:
            field_error(where, f"threshold must be within [0, 1], got {thr}")
        return cls(
            site=read_str(d, "site", where), n_cases=read_int(d, "n_cases", where, 1),
            n_malignant=read_int(d, "n_malignant", where, 1), target_recall=read_num(d, "target_recall", where, finite=True),
            threshold=thr, **{k: read_num(d, k, where) for k in ("recall", "recall_lo", "recall_hi", "far", "far_lo",
                                                            "far_hi")},
            previous_threshold=read_num(d, "previous_threshold", where, finite=True),
            previous_target_recall=read_num(d, "previous_target_recall", where, finite=True), rule=read_str(d, "rule", where),
            warning=read_str(d, "warning", where, none_ok=True, default=None),
            data_root=read_str(d, "data_root", where, none_ok=True, default=None))
