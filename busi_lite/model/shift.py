"""Site-shift statistics of a model (the card's ``shift`` section): is a BATCH of images like
one of the sites the model was trained on?

Space: the model's OOD projection (model.OOD: pooled features minus the training mean, onto
its top-k PCA components, divided by their scales), then onto ``basis`` [k,m]: the orthonormal
complement of the between-class directions, so the class mix of a batch (a folder of
malignant cases only) moves the statistic little. Per training site: the mean [m] and the
precision (inverse within-class covariance) [m,m] of its training images' coordinates.

Statistic of a batch of n images against site s: T_s = min(n, n_cap) * d' P_s d with d the
batch mean minus the site's mean (a Hotelling-like two-sample distance; capping n keeps the
false-alarm rate of big batches from growing with the site's own heterogeneity). The batch
is shifted when T_s > threshold_s for EVERY site. threshold_s: the ``quantile`` of T over
batches of held-out images of site s (group-aware folds: mean and precision fitted without
them), mixed and single-class, of the sizes in ``batch_sizes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from busi_lite.model.records import (
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

SCHEMA_VERSION = 1
BATCH_MIN = 20   # fewer images than this: no batch check (too few to tell a site apart)
N_CAP = 50


def _matrix(d, key, where, rows: int | None, cols: int | None) -> np.ndarray:
    v = read_list(d, key, where)
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        field_error(where, f"{key} must be a matrix of numbers")
    if a.ndim == 1 and cols is None:
        a = a[:, None]
    if a.ndim != 2 or not np.isfinite(a).all() or (rows is not None and a.shape[0] != rows) or \
            (cols is not None and a.shape[1] != cols):
        field_error(where, f"{key} has shape {a.shape}, expected [{rows}, {cols}] finite numbers")
    return a


@dataclass
class SiteShift(Record):
    """One training site: coordinates' mean [m], precision [m,m], threshold of T, images used."""
    SCHEMA: ClassVar[str] = f"site_shift/{SCHEMA_VERSION}"
    name: str
    n: int
    mean: list
    precision: list
    threshold: float
    false_alarm_rate: float   # share of the held-out calibration batches above the threshold

    @classmethod
    def from_json(cls, d, where="site_shift", m: int | None = None) -> SiteShift:
        d = read_obj(d, where)
        mean = _matrix({"mean": [[v] for v in read_list(d, "mean", where)]}, "mean", where, m, 1)[:, 0]
        prec = _matrix(d, "precision", where, len(mean), len(mean))
        thr = read_num(d, "threshold", where, finite=True)
        if thr <= 0:
            field_error(where, f"threshold must be > 0, got {thr}")
        return cls(read_str(d, "name", where), read_int(d, "n", where, 1), mean.tolist(), prec.tolist(), thr,
                   read_num(d, "false_alarm_rate", where, finite=True))


@dataclass
class ShiftInfo(Record):
    """The card's ``shift`` section (see module docstring)."""
    SCHEMA: ClassVar[str] = f"shift/{SCHEMA_VERSION}"
    basis: list                   # [k,m] in the OOD's scaled PCA coordinates
    sites: list                   # [SiteShift]
    quantile: float
    batch_sizes: list
    batch_min: int = BATCH_MIN
    n_cap: int = N_CAP
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        d = super().to_json()
        d["sites"] = [s.to_json() for s in self.sites]
        return d

    @classmethod
    def from_json(cls, d, where="shift") -> ShiftInfo:
        d = read_obj(d, where)
        check_schema(cls, d, where)
        basis = _matrix(d, "basis", where, None, None)
        sites = [SiteShift.from_json(s, f"{where}.sites[{i}]", basis.shape[1])
                 for i, s in enumerate(read_list(d, "sites", where))]
        if not sites:
            field_error(where, "sites must list at least one training site")
        q = read_num(d, "quantile", where, finite=True)
        if not 0 < q < 1:
            field_error(where, f"quantile must be within (0, 1), got {q}")
        sizes = read_list(d, "batch_sizes", where)
        notes = read_field(d, "notes", where, default=[])
        return cls(basis.tolist(), sites, q, [int(s) for s in sizes], read_int(d, "batch_min", where, 2),
                   read_int(d, "n_cap", where, 1), [str(n) for n in notes])

    def arrays(self) -> tuple[np.ndarray, list[tuple[str, np.ndarray, np.ndarray, float]]]:
        """basis [k,m] and per site (name, mean [m], precision [m,m], threshold), as float64 arrays."""
        return (np.asarray(self.basis, np.float64),
                [(s.name, np.asarray(s.mean, np.float64), np.asarray(s.precision, np.float64), float(s.threshold))
                 for s in self.sites])

