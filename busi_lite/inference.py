"""Predict: class probabilities, malignant verdict, lesion map and safety flags per image.

:class:`Predictor` loads a model and the backbone once; ``predict(paths)`` expands
files and folders, decodes images in a small thread pool, runs the backbone in
batches and returns one :class:`Prediction` per image (in argument order). An
image that cannot be read becomes ``ok=False`` with its error; the rest still run.
Flags come from :mod:`busi_lite.flags` (the same function ``evaluate`` measures),
overlays from :mod:`busi_lite.overlay`. Serving only: nothing here imports training.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import data as D
from .backbone import GRID, Backbone, center_box, preprocess
from .errors import BusiError
from .flags import (FLAG_NAMES, Flag, FlagConfig, compute_flags, pixel_issues, pixel_stats,  # noqa: F401
                    thresholds)
from .geometry import lesion_geometry
from .overlay import OverlayWriter, render_overlay, verdict_line  # noqa: F401  (re-exported API)

BATCH = 16


@dataclass
class Prediction:
    path: str
    ok: bool
    error: str | None = None
    proba: dict | None = None
    label: str | None = None
    malignant_alert: bool | None = None
    malignant_threshold: float | None = None
    lesion: list | None = None          # 7x7 lesion probabilities (rows top->bottom) or None
    lesion_peak: float | None = None
    lesion_present: bool | None = None
    lesion_area: float | None = None    # fraction of the centre crop with lesion probability >= 0.5
    lesion_bbox: list | None = None     # [left, top, right, bottom] in original pixels, exclusive
    flags: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)   # flag name -> flagged | passed | disabled | not_applicable
    ood_score: float | None = None
    size: list | None = None            # [width, height] after EXIF orientation
    crop_box: list | None = None        # centre crop the backbone sees, original pixels
    overlay: str | None = None          # path of the overlay PNG, when written

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = [{"name": f.name, "reason": f.reason} for f in self.flags]
        return d


# ---------------------------------------------------------------- inputs

def expand_inputs(inputs) -> tuple[list[Path], list[Prediction]]:
    """Files and folders -> (image paths, error predictions for unusable arguments).

    A folder expands to its image files (sorted, not recursive), skipping lesion
    masks (:func:`busi_lite.data.is_mask_file`: ``x_mask.png``, ``x_mask_2.png``) and hidden files.
    """
    paths, errors = [], []
    for item in inputs:
        p = Path(item)
        try:
            if p.is_dir():
                found = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in D.IMAGE_EXTS
                                and not D.is_mask_file(f) and not f.name.startswith(".")),
                               key=lambda f: D._natural_key(f.name))
                if not found:
                    errors.append(Prediction(str(p), False, f"{p}: folder holds no image files "
                                             f"({', '.join(sorted(D.IMAGE_EXTS))}) -> pass image files or "
                                             "another folder"))
                paths += found
            elif p.is_file():
                paths.append(p)
            else:
                errors.append(Prediction(str(p), False, f"{p}: file not found -> check the path"))
        except (OSError, ValueError) as e:  # no permission, bad name: this argument fails, the others run
            errors.append(Prediction(str(p), False, f"{p}: cannot be read ({e}) -> check the path and its "
                                     "permissions"))
    return paths, errors


@dataclass
class _Input:
    path: Path
    x: np.ndarray
    size: tuple
    pixel: list
    rgb: np.ndarray | None = None


def _load(path: Path, keep_rgb: bool) -> _Input:
    rgb = D.read_rgb(path, D.MAX_PIXELS)
    x = preprocess(rgb)
    return _Input(path, x, (rgb.shape[1], rgb.shape[0]), pixel_issues(pixel_stats(x)), rgb if keep_rgb else None)


# ---------------------------------------------------------------- predictor

class Predictor:
    """Loads the model and the backbone once; ``predict(paths)`` -> list[Prediction]."""

    def __init__(self, model=None, backbone=None, threshold_malignant: float | None = None,
                 flags: FlagConfig = FlagConfig(), batch_size: int = BATCH):
        from .model import Model

        self.model = model if isinstance(model, Model) else Model.load(model)
        self.backbone = backbone if isinstance(backbone, Backbone) else Backbone(backbone)
        self.model.check_backbone(self.backbone.sha256, f"backbone {self.backbone.path}")
        cal = self.model.meta.get("calibration", {})
        t = threshold_malignant if threshold_malignant is not None else cal.get("malignant_threshold")
        if t is not None and not (isinstance(t, (int, float)) and 0.0 <= float(t) <= 1.0):
            raise BusiError(f"threshold_malignant must be within [0, 1], got {t!r}",
                            "give a probability p(malignant) in [0, 1]", param="threshold_malignant")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BusiError(f"batch_size must be an integer >= 1, got {batch_size!r}", "give e.g. 16",
                            param="batch_size")
        self.malignant_threshold = None if t is None else float(t)
        self.flag_config = flags
        self.thresholds = thresholds(self.model, flags)
        self.batch_size = batch_size

    def predict(self, paths, overlay_dir=None, on_result=None) -> list[Prediction]:
        """Predict every image (files or folders); failures become ``ok=False`` entries.

        Results follow the arguments' order (a folder's files in sorted order).
        ``overlay_dir``: write one overlay PNG per image there. ``on_result``: callback per Prediction.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        results = []
        ordered = []  # (kind, item): keep results in argument order
        for item in paths:
            files, errs = expand_inputs([item])
            ordered += [("err", e) for e in errs] + [("file", f) for f in files]
        writer = OverlayWriter(overlay_dir, [f for k, f in ordered if k == "file"]) if overlay_dir else None
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            for s in range(0, len(ordered), self.batch_size):
                chunk = ordered[s:s + self.batch_size]
                futs = [pool.submit(_load, f, writer is not None) if k == "file" else None for k, f in chunk]
                loaded, out = [], [None] * len(chunk)
                for j, ((k, item), fut) in enumerate(zip(chunk, futs)):
                    if fut is None:
                        out[j] = item
                        continue
                    try:
                        loaded.append((j, fut.result()))
                    except D.ImageError as e:
                        out[j] = Prediction(str(item), False, str(e))
                    except Exception as e:  # anything else about one file must not stop the batch
                        out[j] = Prediction(str(item), False, f"{item}: cannot be processed "
                                            f"({type(e).__name__}: {e}) -> check or re-export the file")
                if loaded:
                    preds = self._predict_inputs([inp for _, inp in loaded])
                    for (j, inp), p in zip(loaded, preds):
                        out[j] = p
                        if writer is not None:
                            writer.write(inp.path, inp.rgb, p)
                for p in out:
                    results.append(p)
                    if on_result:
                        on_result(p)
        return results

    def predict_arrays(self, rgbs, names=None) -> list[Prediction]:
        """Predict decoded RGB uint8 arrays [H,W,3] (no files involved)."""
        names = names or [f"array{i}" for i in range(len(rgbs))]
        out = []
        for s in range(0, len(rgbs), self.batch_size):
            inputs = []
            for rgb, name in zip(rgbs[s:s + self.batch_size], names[s:s + self.batch_size]):
                x = preprocess(rgb)
                inputs.append(_Input(Path(name), x, (rgb.shape[1], rgb.shape[0]), pixel_issues(pixel_stats(x))))
            out += self._predict_inputs(inputs)
        return out

    def _predict_inputs(self, inputs: list[_Input]) -> list[Prediction]:
        m = self.model
        feats = self.backbone.features(np.stack([i.x for i in inputs]))
        r = m.predict_features(feats)
        proba, lesion = r["proba"], r["lesion"]
        ood = m.ood.score(r["pooled"]) if m.ood is not None else None
        flags, checks = compute_flags(proba, lesion, ood, m.classes, self.thresholds, self.flag_config,
                                      [i.pixel for i in inputs])
        lt = self.thresholds.get("lesion_threshold")
        preds = []
        for k, inp in enumerate(inputs):
            p = proba[k].astype(np.float64)
            w, h = inp.size
            pred = Prediction(str(inp.path), True, proba={c: float(v) for c, v in zip(m.classes, p)},
                              label=m.classes[int(p.argmax())], malignant_threshold=self.malignant_threshold,
                              flags=flags[k], checks=checks[k],
                              ood_score=None if ood is None else float(ood[k]), size=[w, h],
                              crop_box=list(center_box(w, h)))
            if "malignant" in m.classes and self.malignant_threshold is not None:
                pred.malignant_alert = bool(p[m.classes.index("malignant")] >= self.malignant_threshold)
            if lesion is not None:
                g = lesion[k].reshape(GRID, GRID).astype(np.float64)
                pred.lesion = np.round(g, 4).tolist()
                pred.lesion_peak = float(g.max())
                pred.lesion_present = bool(g.max() >= lt) if lt is not None else None
                pred.lesion_area, pred.lesion_bbox = lesion_geometry(g, w, h)
            preds.append(pred)
        return preds


def predict_images(paths, model=None, backbone=None, threshold_malignant: float | None = None,
                   flags: FlagConfig = FlagConfig(), overlay_dir=None) -> list[Prediction]:
    """Classify image files / folders; see :class:`Predictor` and :class:`Prediction`."""
    return Predictor(model, backbone, threshold_malignant, flags).predict(paths, overlay_dir=overlay_dir)
