"""The batch site-shift check: do these images look like any site the model was trained on?

One image's OOD score catches an odd image, not a new hospital. For a folder (or a web
session) of at least ``batch_min`` images, the mean of their coordinates (model.shift) is
compared with each training site's; when it is far from EVERY site (statistic above that
site's threshold, set so held-out images of the site exceed it rarely), the batch gets
ONE warning, :data:`SHIFT_WARNING`. Predictions carry their coordinates (``shift_coords``,
left out of their JSON), so any list of predictions can be checked. Serving only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


SHIFT_WARNING = ("these images do not look like any site this model was trained on: the whole-image verdict and "
                 "its thresholds are not validated here; use the lesion box, or run `busi-lite evaluate --data` on "
                 "labelled cases of this site and `calibrate`")


def batch_statistic(coords: np.ndarray, mean: np.ndarray, precision: np.ndarray, n_cap: int) -> float:
    """coords [n,m] of a batch -> T = min(n, n_cap) * d' P d, d = batch mean - site mean."""
    d = np.asarray(coords, np.float64).mean(axis=0) - mean
    return float(min(len(coords), n_cap) * d @ precision @ d)


def ood_coords(ood, pooled: np.ndarray) -> np.ndarray:
    """pooled [N,D] -> [N,k]: the OOD statistics' scaled PCA coordinates (model.OOD)."""
    xc = np.asarray(pooled, np.float64) - np.asarray(ood.mean, np.float64)
    return (xc @ np.asarray(ood.components, np.float64).T) / np.asarray(ood.scales, np.float64)


def shift_coords(ood, basis, pooled: np.ndarray) -> np.ndarray:
    """pooled [N,D] -> [N,m]: coordinates of the site-shift check (``basis`` [k,m])."""
    return ood_coords(ood, pooled) @ np.asarray(basis, np.float64)


class SiteShiftWarning(UserWarning):
    """Raised (once per call) by the Python API for a batch unlike every training site."""


@dataclass
class ShiftCheck:
    """The batch check's answer. ``checked``: the model has shift statistics and the batch is big
    enough; ``shifted``: unlike every training site; ``sites``: [{name, statistic, threshold}]."""
    n: int
    checked: bool
    shifted: bool
    batch_min: int | None = None
    sites: list = field(default_factory=list)
    reason: str = ""

    @property
    def warning(self) -> str | None:
        return SHIFT_WARNING if self.shifted else None

    def to_json(self) -> dict:
        return {**asdict(self), "warning": self.warning}


def image_coords(model, pooled: np.ndarray, ood_coords: np.ndarray | None = None) -> np.ndarray | None:
    """pooled [N,D] -> [N,m] coordinates of the check, or None (the model has no shift statistics).
    ``ood_coords``: the OOD projection of ``pooled`` already made (model.OOD.score_and_coords), reused."""
    card = getattr(model, "card", None)
    if card is None or card.shift is None or model.ood is None:
        return None
    if ood_coords is not None:
        return np.asarray(ood_coords, np.float64) @ np.asarray(card.shift.basis, np.float64)
    return shift_coords(model.ood, card.shift.basis, pooled)


def check_coords(model, coords) -> ShiftCheck:
    """The check on the coordinates of a batch (one row per image; None rows skipped)."""
    rows = [c for c in coords if c is not None]
    info = model.card.shift if model.card is not None else None
    if info is None:
        return ShiftCheck(len(rows), False, False, reason="this model has no site-shift statistics")
    if len(rows) < info.batch_min:
        return ShiftCheck(len(rows), False, False, info.batch_min,
                          reason=f"fewer than {info.batch_min} images: no batch check")
    u = np.asarray(rows, np.float64)
    _, sites = info.arrays()
    out = [{"name": name, "statistic": batch_statistic(u, mean, prec, info.n_cap), "threshold": thr}
           for name, mean, prec, thr in sites]
    shifted = all(s["statistic"] > s["threshold"] for s in out)
    return ShiftCheck(len(rows), True, shifted, info.batch_min, out,
                      "unlike every training site" if shifted else "like a training site: " +
                      ", ".join(s["name"] for s in out if s["statistic"] <= s["threshold"]))


def check_predictions(model, preds) -> ShiftCheck:
    """The check on the successful predictions of a batch (their ``shift_coords``)."""
    return check_coords(model, [p.shift_coords for p in preds if p.ok])
