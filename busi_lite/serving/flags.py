"""Safety flags: thresholds, pixel sanity rules and the one flag function.

One shared flag function (:func:`compute_flags`) is used both for new images
(:class:`busi_lite.serving.inference.Predictor`) and for the held-out evaluation from the
feature cache (:func:`busi_lite.evaluation.flag_eval.evaluate_flags`), so what
``busi-lite evaluate`` measures is what ``busi-lite predict`` prints.

Flags (each with a one-line reason):

* ``low_confidence`` - the highest class probability is at or below the model's
  calibrated ``low_confidence`` threshold (chosen on out-of-fold training
  predictions so that half of the training errors fall below it);
* ``mismatch``       - lesion-map models only, clear disagreement only: benign/malignant
  predicted while the lesion map's peak cell is below ``lesion_absent`` (the 5th
  percentile of out-of-fold peaks on lesion images), or normal predicted while it is
  above ``lesion_present`` (the 95th percentile on normal images);
* ``unusual_input``  - the unusual-input score (``ood_score``, an out-of-distribution distance) of the
  pooled features is above
  the model's ``ood_threshold`` (99th percentile of out-of-fold training scores), or
  a pixel-level sanity rule fires (near-constant image, strongly coloured image:
  ultrasound is grey-scale).

:class:`FlagEvidence` is the typed, versioned result of the offline evaluation
(``busi-lite evaluate --json``), read back by the report. Pure NumPy: no model
loading, no training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from busi_lite.common.errors import BusiError

FLAG_NAMES = ("low_confidence", "mismatch", "unusual_input")

# Pixel sanity rules (on the backbone's square network input, values 0..255).
MIN_GRAY_STD = 4.0       # below: a (near-)constant image carries no ultrasound content
MAX_COLOUR = 40.0        # above: mean |channel spread| of a colour photo; B-mode images are grey
                         # (BUSI's coloured calipers/annotations cover a few per cent of the pixels)


@dataclass(frozen=True)
class Flag:
    name: str
    reason: str


@dataclass(frozen=True)
class FlagConfig:
    """Which flags to raise, and optional overrides of the model's calibrated thresholds."""
    low_confidence: bool = True
    mismatch: bool = True
    unusual_input: bool = True
    pixel_checks: bool = True                   # part of unusual_input
    low_confidence_threshold: float | None = None
    lesion_threshold: float | None = None
    ood_threshold: float | None = None

    def __post_init__(self):
        for name in ("low_confidence_threshold", "lesion_threshold"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise BusiError(f"{name} must be within [0, 1], got {v!r}", "give a probability", param=name)
        v = self.ood_threshold
        if v is not None and not (isinstance(v, (int, float)) and v == v):
            raise BusiError(f"ood_threshold must be a number, got {v!r}", "give a number", param="ood_threshold")


def thresholds(model, config: FlagConfig = FlagConfig()) -> dict:
    """Flag thresholds: the model's calibration unless overridden in ``config``."""
    cal = model.card.calibration
    ood = config.ood_threshold
    if ood is None:
        ood = model.ood.threshold if model.ood is not None else cal.ood_threshold
    lesion = config.lesion_threshold if config.lesion_threshold is not None else cal.lesion_threshold
    if lesion is None and model.has_lesion_map:
        lesion = 0.5
    low = config.low_confidence_threshold
    lesion = None if lesion is None else float(lesion)
    absent, present = lesion, lesion  # models calibrated before the two-sided rule: one cut
    if config.lesion_threshold is None:
        absent = cal.lesion_absent if cal.lesion_absent is not None else lesion
        present = cal.lesion_present if cal.lesion_present is not None else lesion
    return {"low_confidence": float(cal.low_confidence if low is None else low),
            "lesion_threshold": lesion, "lesion_absent": absent, "lesion_present": present,
            "ood_threshold": None if ood is None else float(ood)}


def pixel_stats(x224: np.ndarray) -> dict:
    """Cheap statistics of one preprocessed input [S,S,3] in [-1,1], on 0..255:
    grey = mean of the channels, its std; colour = mean of max - min over the channels.

    Channel-wise float32 arithmetic in the order ``np.mean(axis=2)`` / ``max - min`` use
    (bit-identical to them) without reducing over the short last axis, which is slow.
    """
    a = np.asarray(x224, np.float32) + np.float32(1.0)
    a *= np.float32(127.5)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    gray = r + g
    gray += b
    gray /= np.float32(3.0)
    spread = np.maximum(np.maximum(r, g), b)
    spread -= np.minimum(np.minimum(r, g), b)
    return {"gray_std": float(gray.std()), "colour": float(spread.mean())}


def pixel_issues(stats: dict) -> list[str]:
    """Reasons from the pixel-level sanity rules (empty list: none)."""
    out = []
    if stats["gray_std"] < MIN_GRAY_STD:
        out.append(f"near-constant image (grey-level std {stats['gray_std']:.1f} < {MIN_GRAY_STD:g}): "
                   "no ultrasound content")
    if stats["colour"] > MAX_COLOUR:
        out.append(f"strongly coloured image (mean channel spread {stats['colour']:.0f} > {MAX_COLOUR:g}): "
                   "B-mode ultrasound is grey-scale")
    return out


def compute_flags(proba, lesion, ood, classes, thr: dict, config: FlagConfig = FlagConfig(),
                  pixel=None) -> tuple[list[list[Flag]], list[dict]]:
    """Flags of N predictions.

    proba [N,C]; lesion [N,G*G] or None (no lesion map); ood [N] or None; ``thr`` from
    :func:`thresholds`; ``pixel``: per image a list of pixel-rule reasons, or None
    (not checked, e.g. features from the cache).
    Returns (flags per image, checks per image {flag: flagged|passed|disabled|not_applicable}).
    """
    proba = np.asarray(proba, np.float64)
    n = len(proba)
    classes = list(classes)
    normal = classes.index("normal") if "normal" in classes else 0
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    peak = None if lesion is None else np.asarray(lesion, np.float64).reshape(n, -1).max(axis=1)
    flags, checks = [], []
    for i in range(n):
        f, c = [], {}
        # 1. low confidence
        if not config.low_confidence:
            c["low_confidence"] = "disabled"
        else:
            t = thr["low_confidence"]
            hit = conf[i] <= t  # <=: a constant-probability model (conf == t) is flagged
            c["low_confidence"] = "flagged" if hit else "passed"
            if hit:
                f.append(Flag("low_confidence", f"highest probability {conf[i]:.2f} ({classes[pred[i]]}) is "
                                                f"at or below {t:.2f}: the classes are hard to tell apart here"))
        # 2. mismatch between label and lesion map
        if not config.mismatch:
            c["mismatch"] = "disabled"
        elif peak is None or thr.get("lesion_absent") is None or thr.get("lesion_present") is None:
            c["mismatch"] = "not_applicable"
        else:
            lo, hi = thr["lesion_absent"], thr["lesion_present"]
            if pred[i] == normal and peak[i] >= hi:
                f.append(Flag("mismatch", f"predicted {classes[pred[i]]} but the lesion map shows a lesion "
                                          f"(peak {peak[i]:.2f} >= {hi:.2f})"))
            elif pred[i] != normal and peak[i] < lo:
                f.append(Flag("mismatch", f"predicted {classes[pred[i]]} but the lesion map finds no lesion "
                                          f"(peak {peak[i]:.2f} < {lo:.2f})"))
            c["mismatch"] = "flagged" if f and f[-1].name == "mismatch" else "passed"
        # 3. unusual input
        if not config.unusual_input:
            c["unusual_input"] = "disabled"
        else:
            reasons = []
            t = thr.get("ood_threshold")
            have_ood = ood is not None and t is not None
            if have_ood and not np.isfinite(ood[i]):     # never "passed" on a score that is not a number
                reasons.append("unusual-input score is not finite: the model's OOD statistics cannot judge "
                               "this image")
            elif have_ood and ood[i] > t:
                reasons.append(f"unusual-input score {ood[i]:.2f} > {t:.2f}: "
                               "unlike the breast-ultrasound training images")
            if config.pixel_checks and pixel is not None:
                reasons += pixel[i]
            if not have_ood and not (config.pixel_checks and pixel is not None):
                c["unusual_input"] = "not_applicable"
            else:
                c["unusual_input"] = "flagged" if reasons else "passed"
            if reasons:
                f.append(Flag("unusual_input", "; ".join(reasons)))
        flags.append(f)
        checks.append(c)
    return flags, checks


# ---------------------------------------------------------------- evidence record (evaluate's output)

FLAG_EVIDENCE_SCHEMA = "busi-lite/flag-evidence"
FLAG_EVIDENCE_VERSION = 1


def _f(v) -> float:
    """JSON number or null -> float (null -> nan)."""
    return float("nan") if v is None else float(v)


@dataclass
class FlagStats:
    """How the errors of the test images distribute over flagged and unflagged ones.

    ``status``: active | disabled | not_applicable; the numbers are set when active
    (shares are nan when their denominator is 0)."""
    status: str = "active"
    n_flagged: int = 0
    n_unflagged: int = 0
    share_of_images: float = math.nan
    accuracy_flagged: float = math.nan
    accuracy_unflagged: float = math.nan
    errors_flagged: int = 0
    share_of_errors: float = math.nan
    missed_malignant_argmax_flagged: int = 0
    share_of_missed_malignant_argmax: float = math.nan
    missed_malignant_op_flagged: int = 0
    share_of_missed_malignant_op: float = math.nan

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def error_ratio(self) -> float:
        """share of errors / share of images (> 1: the flag concentrates errors)."""
        s = self.share_of_images
        return self.share_of_errors / s if s and s == s else math.nan

    def to_json(self) -> dict:
        if not self.active:
            return {"status": self.status}
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict) -> "FlagStats":
        if not isinstance(d, dict):
            raise ValueError(f"flag statistics must be an object, got {type(d).__name__}")
        kw = {"status": d.get("status", "active")}
        if kw["status"] == "active":
            for f in fields(cls):
                if f.name == "status":
                    continue
                if f.name not in d:
                    raise ValueError(f"flag statistics lack {f.name!r}")
                kw[f.name] = int(d[f.name]) if f.type == "int" else _f(d[f.name])
        return cls(**kw)


@dataclass
class FlagEvidence:
    """Result of :func:`busi_lite.evaluation.flag_eval.evaluate_flags` on a model's held-out test images."""
    model: str | None
    cache: str
    split_digest: str
    n: int
    n_errors: int
    accuracy: float
    n_missed_malignant_argmax: int
    n_missed_malignant_op: int
    thresholds: dict                 # low_confidence, lesion_threshold, lesion_absent/present, ood, malignant
    flags: dict                      # flag name -> FlagStats
    any_flag: FlagStats
    operating_point: dict            # threshold, recall, far, precision, tp, fn, fp, tn
    pixel_checks: str = "not applied (features come from the cache, not from image files)"
    per_image: list | None = None    # [{path, y, pred, flags}] or None
    version: int = FLAG_EVIDENCE_VERSION

    def to_json(self) -> dict:
        d = {"schema": FLAG_EVIDENCE_SCHEMA, "version": self.version, "model": self.model, "cache": self.cache,
             "split_digest": self.split_digest, "n": self.n, "n_errors": self.n_errors, "accuracy": self.accuracy,
             "n_missed_malignant_argmax": self.n_missed_malignant_argmax,
             "n_missed_malignant_op": self.n_missed_malignant_op, "thresholds": dict(self.thresholds),
             "pixel_checks": self.pixel_checks, "flags": {k: v.to_json() for k, v in self.flags.items()},
             "any_flag": self.any_flag.to_json(), "operating_point": dict(self.operating_point)}
        if self.per_image is not None:
            d["per_image"] = self.per_image
        return d

    @classmethod
    def from_json(cls, d, source: str = "flag evidence") -> "FlagEvidence":
        """Parse the JSON output of ``busi-lite evaluate``; a mismatch raises BusiError naming ``source``."""
        fix = "write it again with this version's `busi-lite evaluate` (JSON output)"
        if not isinstance(d, dict) or "flags" not in d or "any_flag" not in d:
            raise BusiError(f"{source}: not the JSON output of `busi-lite evaluate` (no 'flags'/'any_flag')", fix)
        if d.get("schema", FLAG_EVIDENCE_SCHEMA) != FLAG_EVIDENCE_SCHEMA or \
                d.get("version", FLAG_EVIDENCE_VERSION) != FLAG_EVIDENCE_VERSION:
            raise BusiError(f"{source}: schema {d.get('schema')} version {d.get('version')}, this busi-lite reads "
                            f"{FLAG_EVIDENCE_SCHEMA} version {FLAG_EVIDENCE_VERSION}", fix)
        try:
            thr = dict(d["thresholds"])
            return cls(model=d.get("model"), cache=str(d["cache"]), split_digest=str(d["split_digest"]),
                       n=int(d["n"]), n_errors=int(d["n_errors"]), accuracy=_f(d["accuracy"]),
                       n_missed_malignant_argmax=int(d["n_missed_malignant_argmax"]),
                       n_missed_malignant_op=int(d["n_missed_malignant_op"]), thresholds=thr,
                       flags={k: FlagStats.from_json(v) for k, v in dict(d["flags"]).items()},
                       any_flag=FlagStats.from_json(d["any_flag"]),
                       operating_point={k: (_f(v) if k in ("recall", "far", "precision") else v)
                                        for k, v in dict(d["operating_point"]).items()},
                       pixel_checks=str(d.get("pixel_checks", "")), per_image=d.get("per_image"))
        except (KeyError, TypeError, ValueError) as e:
            raise BusiError(f"{source}: flag evidence is incomplete or malformed ({e})", fix) from None
