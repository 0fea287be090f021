"""Predict: class probabilities, malignant screen, lesion map and safety flags per image.

:class:`Predictor` loads a model and the backbone once; ``predict(paths)`` expands
files and folders and returns one :class:`Prediction` per image (in argument order).
One file is decoded in the calling thread; several are decoded by the Predictor's
decode threads (started once, reused), one batch ahead of the backbone, which runs
in batches of ``batch_size`` (so at most two batches of images are held at once). An
image that cannot be read becomes ``ok=False`` with its error; the rest still run.
Flags come from :mod:`busi_lite.serving.flags` (the same function ``evaluate`` measures),
overlays from :mod:`busi_lite.serving.overlay`. Serving only: nothing here imports training.

Inputs: PNG/JPEG/BMP/TIFF, and DICOM (:mod:`busi_lite.io.dicom`: ``*.dcm``/``*.dicom``
or any file with the ``DICM`` preamble). A DICOM file gives one Prediction per
frame (or only ``frame``), each naming its file, frame and SOP Instance UID and
nothing about the patient. Its pixels are cropped to the ultrasound region first
(``dicom_crop``); ``size`` is the size of that region, and ``crop_box`` /
``lesion_bbox`` are given in the ORIGINAL FRAME's pixels (offset by the region's
origin), so they can be drawn on the frame as stored.

A prediction whose probabilities (or lesion map) are not finite is an error for
that image (``ok=False``), never a label: the model is damaged.

Serving follows the model: images go through the model's own preprocessing
(``model.preprocessing``: v1 Teachable Machine's, v2 contrast-normalised), and a model
trained with flip averaging (``model.flip``) is run on the image and its mirror, the two
probabilities averaged (the mirror's lesion map mirrored back before averaging).

Lesion-box mode: a box (busi_lite.serving.boxes.LesionBox, stored-file pixels) per image. With a
model that has a box head (``supports_box``), the box plus 30 % margin is resized to
224x224 and the box head (benign vs malignant, its own threshold) answers from
[whole image, lesion crop] features, averaged with the mirrored pair when the box head was
trained so: ``box``, ``box_proba``, ``box_malignant_alert``. The main head's answer is
unchanged. A model without a box head ignores the box and says so in ``notes``. A box
outside its image fails that image (``ok=False``) with an error naming the box's source.
A model with a lesion map also proposes a box (``proposed_box`` = ``lesion_bbox``), which
the user can correct.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from busi_lite.common.errors import MAX_PIXELS, BusiError, ConfigError
from busi_lite.features.backbone import Backbone, center_box
from busi_lite.features.preprocess import V1, Preprocessing, mirror
from busi_lite.io import dicom
from busi_lite.io.imread import read_rgb
from busi_lite.model.provenance import provenance
from busi_lite.serving.advice import advise, advise_all, site_status
from busi_lite.serving.boxes import LesionBox, box_in_image, make_box
from busi_lite.serving.flags import (
    Flag,
    FlagConfig,
    compute_flags,
    pixel_issues,
    pixel_stats,
    thresholds,
)
from busi_lite.serving.geometry import lesion_geometry
from busi_lite.serving.prediction import Prediction
from busi_lite.serving.shift import (
    SHIFT_WARNING,
    ShiftCheck,
    SiteShiftWarning,
    check_coords,
    check_predictions,
    image_coords,
)

BATCH = 16
NON_FINITE = "model produced non-finite probabilities -> the model is damaged; retrain or reinstall it"
NO_BOX_NOTE = "this model has no lesion-box mode; box ignored"
SHOWN_ANYWAY = "unusual input: verdict shown anyway (research use; the model was not made for images like this)"
REASON_WITHHELD = "reason withheld with the verdict (it would name a class)"
MIN_BOX = 2  # px: a thinner lesion-map box is not proposed (preprocess.check_box refuses it)
PROPOSED_NOTE = ("proposed_box is the lesion map's box of cells >= 0.5 (coarse: whole cells of the backbone's grid); "
                 "check and correct it "
                 "before using it as a lesion box")


def _is_input_file(f: Path) -> bool:
    """A folder member worth predicting: an image (not a mask) or a DICOM file; never hidden."""
    from busi_lite.io import data as D

    if f.name.startswith(".") or not f.is_file():
        return False
    if f.suffix.lower() in D.IMAGE_EXTS:
        return not D.is_mask_file(f)
    return dicom.is_dicom(f)   # *.dcm / *.dicom, or any other name with the DICM preamble


def expand_inputs(inputs) -> tuple[list[Path], list[Prediction]]:
    """Files and folders -> (input paths, error predictions for unusable arguments).

    A folder expands to its image and DICOM files (sorted, not recursive), skipping
    lesion masks (:func:`busi_lite.io.data.is_mask_file`: ``x_mask.png``, ``x_mask_2.png``)
    and hidden files. A file argument is taken as it is (its content decides how it is read).
    """
    paths, errors = [], []
    for item in inputs:
        p = Path(item)
        try:
            if p.is_dir():
                from busi_lite.io import data as D  # folders only: one file needs none of it

                found = sorted((f for f in p.iterdir() if _is_input_file(f)), key=lambda f: D.natural_key(f.name))
                if not found:
                    kinds = ", ".join(sorted(D.IMAGE_EXTS | dicom.DICOM_SUFFIXES))
                    errors.append(Prediction(str(p), False, f"{p}: folder holds no image or DICOM files "
                                             f"({kinds}) -> pass image files or another folder"))
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
    """One image ready for the backbone. ``x`` [S,S,3] float32 (S: the spec's input_size); ``size`` (w, h) of the
    pixels used; ``offset`` (x, y) of those pixels in the stored frame (DICOM region crop)."""
    path: Path
    x: np.ndarray
    size: tuple
    pixel: list
    rgb: np.ndarray | None = None
    offset: tuple = (0, 0)
    frame: dicom.DicomFrame | None = None   # DICOM metadata (its rgb is dropped when not kept)
    box: tuple | None = None        # lesion box in the decoded pixels (clamped), when used
    xb: np.ndarray | None = None    # [S,S,3] the lesion crop's network input, when used
    notes: list = field(default_factory=list)


@dataclass(frozen=True)
class _Prep:
    """How inputs are made: the model's preprocessing; use_box = the model has a box head."""
    pp: Preprocessing = Preprocessing(V1)
    use_box: bool = False


def _input(path: Path, rgb: np.ndarray, keep_rgb: bool, frame: dicom.DicomFrame | None = None,
           prep: _Prep = _Prep(), box: LesionBox | None = None) -> _Input:
    x = prep.pp(rgb)
    off = (0, 0) if frame is None or frame.crop is None else (int(frame.crop[0]), int(frame.crop[1]))
    inp = _Input(path, x, (rgb.shape[1], rgb.shape[0]), pixel_issues(pixel_stats(x)),
                 rgb if keep_rgb else None, off, frame)
    if frame is not None:
        inp.notes += list(frame.notes)      # e.g. an unusable ultrasound region
    if box is not None and not prep.use_box:
        inp.notes.append(NO_BOX_NOTE)
    elif box is not None:
        inp.box = box_in_image(box, rgb.shape[1], rgb.shape[0], *off)   # BoxError naming box.source
        inp.xb = prep.pp(rgb, box=inp.box)
    return inp


def _load(path: Path, keep_rgb: bool, frame: int | None = None, prep: _Prep = _Prep(),
          box: LesionBox | None = None) -> list[_Input]:
    """One file -> its inputs: one for an image, one per (chosen) frame for DICOM."""
    if dicom.is_dicom(path):
        return [_input(path, f.rgb, keep_rgb, f, prep, box) for f in dicom.read_frames(path, frame)]
    return [_input(path, read_rgb(path, MAX_PIXELS), keep_rgb, None, prep, box)]


class _Done:
    """A call made in this thread, read like a finished Future: ``result()`` returns its value or raises its error."""

    def __init__(self, fn, *args):
        try:
            self.value, self.error = fn(*args), None
        except Exception as e:  # noqa: BLE001 - handed to the caller through result(), as the pool's Future does
            self.value, self.error = None, e

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def check_boxes(boxes) -> dict:
    """``boxes``: None or {image path: box (LesionBox, "x0,y0,x1,y1" or four numbers)} -> {resolved Path: LesionBox}."""
    if boxes is None:
        return {}
    if not isinstance(boxes, dict):
        raise ConfigError(f"boxes must be a dict {{image path: box}}, got {type(boxes).__name__}",
                          "give e.g. {'img.png': (x0, y0, x1, y1)}, or read one with busi_lite.serving.boxes.read_boxes_csv",
                          param="boxes")
    return {Path(k).resolve(): make_box(v, f"box of {k}") for k, v in boxes.items()}


def _error_text(path, e: Exception) -> str:
    if isinstance(e, BusiError):
        msg = str(e)
        return msg if str(path) in msg else f"{path}: {msg}"
    return f"{path}: cannot be processed ({type(e).__name__}: {e}) -> check or re-export the file"


def check_frame(frame) -> int | None:
    """``frame``: None (every frame) or a 0-based index; raises ConfigError otherwise."""
    if frame is None:
        return None
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ConfigError(f"frame must be a 0-based frame index (int >= 0) or None, got {frame!r}",
                          "give e.g. 0 for the first frame, or None for every frame", param="frame")
    return int(frame)


# ---------------------------------------------------------------- predictor

class Predictor:
    """Loads the model and the backbone once; ``predict(paths)`` -> list[Prediction].

    ``provenance`` (busi_lite.model.provenance.Provenance, filled once here) says which model and
    threshold answer; every Prediction refers to it. ``model_path`` / ``model_sha256`` (weights) /
    ``model_source`` as before (path None for a model passed as an object); :meth:`describe` prints
    them with the backbone.

    Withheld verdicts: when ``unusual_input`` fires, a Prediction gets no verdict (label,
    probabilities, screen, lesion map, box answer) and ``withheld`` says why, unless
    ``show_anyway`` (research use; also a per-call argument of predict / predict_arrays).

    ``site``: the name of the site the images come from, or None; ``self.site``
    (busi_lite.serving.advice.SiteStatus) says whether the model is validated there, which
    decides each prediction's ``recommended`` answer with the batch check (serving.advice).
    """

    def __init__(self, model=None, backbone=None, threshold_malignant: float | None = None,
                 flags: FlagConfig = FlagConfig(), batch_size: int = BATCH, show_anyway: bool = False,
                 site: str | None = None):
        from busi_lite.common.resources import resolve
        from busi_lite.model.model import Model

        if isinstance(model, Model):
            self.model, self.model_path, self.model_sha256, self.model_source = model, None, None, "object"
        else:
            self.model = Model.load(model)
            r = resolve("model", model)
            stem = r.path.with_suffix("") if r.path.suffix in (".npz", ".json") else r.path
            # the weights' SHA-256: Model.load hashed the .npz and refused it unless it equals the card's
            self.model_path, self.model_sha256, self.model_source = str(stem), self.model.card.weights_sha256, r.source
        self.backbone = backbone if isinstance(backbone, Backbone) else Backbone(backbone, spec=self.model.spec)
        self.model.check_backbone(self.backbone.sha256, f"backbone {self.backbone.path}")
        t = threshold_malignant if threshold_malignant is not None else self.model.card.calibration.malignant_threshold
        if t is not None and not (isinstance(t, (int, float)) and 0.0 <= float(t) <= 1.0):
            raise BusiError(f"threshold_malignant must be within [0, 1], got {t!r}",
                            "give a probability p(malignant) in [0, 1]", param="threshold_malignant")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BusiError(f"batch_size must be an integer >= 1, got {batch_size!r}", "give e.g. 16",
                            param="batch_size")
        self.malignant_threshold = None if t is None else float(t)
        self.provenance = provenance(self.model, self.model_path, self.model_source, threshold_malignant)
        self.show_anyway = bool(show_anyway)
        self.site = site_status(self.provenance, site)
        self._unchecked = check_coords(self.model, [])   # one image alone: the batch check cannot run
        self.preprocessing = self.model.preprocessing
        self.flip = self.model.flip
        info = self.model.card.box if self.model.supports_box else None
        self.box_threshold = None if info is None else float(info.malignant_threshold)
        self.box_flip = bool(info.flip) if info is not None else False
        self._prep = _Prep(self.preprocessing, self.model.supports_box)
        self.flag_config = flags
        self.thresholds = thresholds(self.model, flags)
        self.batch_size = batch_size
        self._decoder, self._pool_lock = None, threading.Lock()

    def _pool(self):
        """The decode threads (a ThreadPoolExecutor): started on first use, then reused by every call (thread-safe)."""
        from concurrent.futures import ThreadPoolExecutor
        with self._pool_lock:
            if self._decoder is None:
                self._decoder = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), "busi-lite-decode")
            return self._decoder

    @property
    def supports_box(self) -> bool:
        """The model has a lesion-box head: boxes given to predict / predict_arrays are used."""
        return self.model.supports_box

    def describe(self) -> str:
        """Which model answers (name, digest, path and where it came from), its threshold's origin, and the backbone."""
        pv = self.provenance
        where = "in memory" if self.model_path is None else f"{self.model_path}, {self.model_source}"
        t = "no malignant threshold" if pv.malignant_threshold is None else \
            f"malignant threshold {pv.malignant_threshold:.3f} {pv.threshold_source}"
        return (f"model {pv.name} (digest {pv.short_digest}; {where}); {t}; "
                f"backbone {self.backbone.path} (sha256 {self.backbone.sha256[:12]})")

    def predict(self, paths, overlay_dir=None, on_result=None, frame: int | None = None,
                boxes=None, show_anyway: bool | None = None) -> list[Prediction]:
        """Predict every image / DICOM frame (files or folders); failures become ``ok=False`` entries.

        Results follow the arguments' order (a folder's files in sorted order, a DICOM
        file's frames in frame order). ``frame``: for DICOM files, predict only this
        0-based frame (a file without it fails); images ignore it. ``overlay_dir``: write
        one overlay PNG per prediction there. ``on_result``: callback per Prediction.
        ``boxes``: {image path: lesion box} (see :func:`check_boxes`); files without one get none.
        ``show_anyway``: give the verdict even for unusual inputs (default: the predictor's setting).
        """
        frame = check_frame(frame)
        anyway = self.show_anyway if show_anyway is None else bool(show_anyway)
        boxes = check_boxes(boxes)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        results = []
        ordered = []  # (kind, item): keep results in argument order
        for item in paths:
            files, errs = expand_inputs([item])
            ordered += [("err", e) for e in errs] + [("file", f) for f in files]
        if overlay_dir:
            from busi_lite.serving.overlay import OverlayWriter
        writer = OverlayWriter(overlay_dir, [f for k, f in ordered if k == "file"]) if overlay_dir else None

        def emit(p):
            results.append(p)
            if on_result:
                on_result(p)

        keep, chunks = writer is not None, [ordered[s:s + self.batch_size] for s in range(0, len(ordered), self.batch_size)]

        def start(chunk):  # one file alone is decoded here; otherwise in the pool, ahead of the backbone
            run = _Done if len(ordered) == 1 else self._pool().submit
            return [run(_load, f, keep, frame, self._prep, boxes.get(Path(f).resolve())) if k == "file" else None
                    for k, f in chunk]

        pending = start(chunks[0]) if chunks else []
        for c, chunk in enumerate(chunks):
            futs = pending   # at most two chunks are held: this one and the next, being decoded
            pending = start(chunks[c + 1]) if c + 1 < len(chunks) else []
            slots = []  # per chunk item: a Prediction (error) or the list of its inputs
            for (k, item), fut in zip(chunk, futs):
                if fut is None:
                    slots.append(item)
                    continue
                try:
                    slots.append(fut.result())
                except Exception as e:  # anything about one file must not stop the batch
                    slots.append(Prediction(str(item), False, _error_text(item, e)))
            inputs = [inp for slot in slots if isinstance(slot, list) for inp in slot]
            preds = []
            for b in range(0, len(inputs), self.batch_size):
                preds += self._predict_inputs(inputs[b:b + self.batch_size], anyway)
            done = iter(zip(inputs, preds))
            for slot in slots:
                if isinstance(slot, Prediction):
                    emit(slot)
                    continue
                for _ in slot:
                    inp, p = next(done)
                    if writer is not None and p.ok:
                        writer.write(inp.path, inp.rgb, p)
                    inp.rgb = None
                    emit(p)
        return results

    def predict_arrays(self, rgbs, names=None, frames=None, boxes=None,
                       show_anyway: bool | None = None) -> list[Prediction]:
        """Predict decoded RGB uint8 arrays [H,W,3] (no files involved).

        ``frames``: optional :class:`busi_lite.io.dicom.DicomFrame` (or None) per array, when the
        arrays are DICOM frames: results then carry frame / SOP UID / dicom_crop and give
        boxes in frame pixels, as :meth:`predict` does. ``boxes``: optional lesion box (or
        None) per array, in the array's (frame's) pixels; a box outside its array raises BoxError.
        ``show_anyway``: as in :meth:`predict`.
        """
        anyway = self.show_anyway if show_anyway is None else bool(show_anyway)
        names = names or [f"array{i}" for i in range(len(rgbs))]
        frames = frames or [None] * len(rgbs)
        boxes = [None] * len(rgbs) if boxes is None else [None if b is None else make_box(b, f"box of {n}")
                                                          for b, n in zip(boxes, names)]
        if len(names) != len(rgbs) or len(frames) != len(rgbs) or len(boxes) != len(rgbs):
            raise ConfigError(f"names ({len(names)}), frames ({len(frames)}) and boxes ({len(boxes)}) must match "
                              f"the {len(rgbs)} arrays", "give one name, frame (or None) and box (or None) per array",
                              param="names")
        out = []
        for s in range(0, len(rgbs), self.batch_size):
            sl = slice(s, s + self.batch_size)
            inputs = [_input(Path(n), rgb, False, f, self._prep, b)
                      for rgb, n, f, b in zip(rgbs[sl], names[sl], frames[sl], boxes[sl])]
            out += self._predict_inputs(inputs, anyway)
        return out

    def _features(self, inputs: list[_Input]):
        """One backbone run for the batch: whole inputs, their mirrors (flip averaging, or the box
        head's mirrored pair), lesion crops and their mirrors. -> (whole, whole_mirrored | None,
        crop | None, crop_mirrored | None, rows with a crop)."""
        brows = [k for k, i in enumerate(inputs) if i.xb is not None]
        need_m = bool(self.flip or (brows and self.box_flip))
        n, nb = len(inputs), len(brows)
        n_crops = nb * (2 if self.box_flip else 1)
        x = np.empty((n * (2 if need_m else 1) + n_crops, *inputs[0].x.shape), np.float32)
        x[:n] = [i.x for i in inputs]
        if need_m:
            x[n:2 * n] = mirror(x[:n])
        if brows:
            at = 2 * n if need_m else n
            x[at:at + nb] = [inputs[k].xb for k in brows]
            if self.box_flip:
                x[at + nb:at + 2 * nb] = mirror(x[at:at + nb])
        feats = self.backbone.features(x)
        whole = feats[:n]
        whole_m = feats[n:2 * n] if need_m else None
        at = 2 * n if need_m else n
        crop = feats[at:at + nb] if brows else None
        crop_m = feats[at + nb:at + 2 * nb] if brows and self.box_flip else None
        return whole, whole_m, crop, crop_m, brows

    def _predict_inputs(self, inputs: list[_Input], show_anyway: bool = False) -> list[Prediction]:
        m = self.model
        feats, feats_m, crop, crop_m, brows = self._features(inputs)
        with np.errstate(invalid="ignore", over="ignore"):  # a damaged model is reported per image below
            r = m.predict_features(feats, feats_m if self.flip else None)
            box_p = {}
            if brows:
                bp = m.predict_box(_pooled(feats[brows]), _pooled(crop),
                                   None if crop_m is None else _pooled(feats_m[brows]),
                                   None if crop_m is None else _pooled(crop_m))
                box_p = {k: bp[j] for j, k in enumerate(brows)}
        proba, lesion = np.asarray(r["proba"], np.float64), r["lesion"]
        finite = np.isfinite(proba).all(axis=1)
        if lesion is not None:
            finite &= np.isfinite(lesion).all(axis=1)
        ood, u = m.ood.score_and_coords(r["pooled"]) if m.ood is not None else (None, None)
        coords = image_coords(m, r["pooled"], u)   # the OOD projection, made once
        # damaged rows are reported as errors below; neutral values keep the flag rules quiet for them
        safe_p = np.where(finite[:, None], np.nan_to_num(proba), 1.0 / proba.shape[1])
        safe_l = None if lesion is None else np.where(finite[:, None], np.nan_to_num(lesion), 0.0)
        safe_o = ood        # a non-finite OOD score is flagged (compute_flags), never "passed"
        flags, checks = compute_flags(safe_p, safe_l, safe_o, m.classes, self.thresholds, self.flag_config,
                                      [i.pixel for i in inputs])
        lt = self.thresholds.get("lesion_threshold")
        preds = []
        for k, inp in enumerate(inputs):
            pred = Prediction(str(inp.path), False, notes=list(inp.notes), model=self.provenance)
            if inp.frame is not None:
                f = inp.frame
                pred.frame, pred.n_frames, pred.sop_instance_uid = int(f.frame), int(f.n_frames), f.sop_instance_uid
                pred.dicom_crop = None if f.crop is None else [int(v) for v in f.crop]
            if not finite[k] or (k in box_p and not np.isfinite(box_p[k]).all()):
                pred.error = f"{pred.name}: {NON_FINITE}"
                preds.append(pred)
                continue
            p = proba[k]
            w, h = inp.size
            ox, oy = inp.offset
            pred.ok = True
            pred.proba = {c: float(v) for c, v in zip(m.classes, p)}
            pred.label = m.classes[int(p.argmax())]
            pred.malignant_threshold = self.malignant_threshold
            pred.flags, pred.checks = flags[k], checks[k]
            pred.ood_score = None if ood is None or not np.isfinite(ood[k]) else float(ood[k])
            if coords is not None and np.isfinite(coords[k]).all():
                pred.shift_coords = coords[k].tolist()
            pred.size = [w, h]
            pred.crop_box = _shift(center_box(w, h), ox, oy)
            if "malignant" in m.classes and self.malignant_threshold is not None:
                pred.malignant_alert = bool(p[m.classes.index("malignant")] >= self.malignant_threshold)
            if lesion is not None:
                g = lesion[k].reshape(self.model.spec.grid, -1).astype(np.float64)
                pred.lesion = np.round(g, 4).tolist()
                pred.lesion_peak = float(g.max())
                pred.lesion_present = bool(g.max() >= lt) if lt is not None else None
                pred.lesion_area, box = lesion_geometry(g, w, h)
                pred.lesion_bbox = None if box is None else _shift(box, ox, oy)
                lb = pred.lesion_bbox
                if lb is not None and lb[2] - lb[0] >= MIN_BOX and lb[3] - lb[1] >= MIN_BOX:
                    pred.proposed_box = list(lb)
                    pred.notes.append(PROPOSED_NOTE)
            if k in box_p:
                bp = box_p[k]
                pred.box = _shift(inp.box, ox, oy)
                pred.box_proba = {c: float(v) for c, v in zip(m.card.box.classes, bp)}
                pred.box_malignant_threshold = self.box_threshold
                pred.box_malignant_alert = bool(bp[1] >= self.box_threshold)
            _withhold_unusual(pred, show_anyway)
            advise(pred, self.supports_box, self._unchecked, self.site)
            preds.append(pred)
        return preds

    def check_batch(self, preds) -> ShiftCheck:
        """The site-shift check of a batch of this predictor's predictions (a folder, a session);
        sets every prediction's ``recommended`` answer from it (busi_lite.serving.advice)."""
        check = check_predictions(self.model, preds)
        advise_all(preds, self.supports_box, check, self.site)
        return check


def _withhold_unusual(pred: Prediction, show_anyway: bool) -> None:
    """unusual_input fired: withhold the verdict (or, with show_anyway, keep it and say so in notes)."""
    unusual = next((f for f in pred.flags if f.name == "unusual_input"), None)
    if unusual is None:
        return
    if show_anyway:
        pred.notes.append(SHOWN_ANYWAY)
    else:
        pred.withhold(f"unusual input: {unusual.reason}")
        pred.notes = [n for n in pred.notes if n != PROPOSED_NOTE]
        # the other flags' reasons name the class or the lesion map: they are withheld with the verdict
        pred.flags = [f if f is unusual else Flag(f.name, REASON_WITHHELD) for f in pred.flags]


def _pooled(feats: np.ndarray) -> np.ndarray:
    """Backbone features [N,7,7,D] -> globally average-pooled [N,D]."""
    return feats.reshape(len(feats), -1, feats.shape[-1]).mean(axis=1)


def _shift(box, dx: int, dy: int) -> list:
    l, t, r, b = box
    return [int(l) + dx, int(t) + dy, int(r) + dx, int(b) + dy]


def predict_images(paths, model=None, backbone=None, threshold_malignant: float | None = None,
                   flags: FlagConfig = FlagConfig(), overlay_dir=None, frame: int | None = None, box=None,
                   boxes=None, show_anyway: bool = False, site: str | None = None) -> list[Prediction]:
    """Classify image / DICOM files and folders; see :class:`Predictor` and :class:`Prediction`.
    ``box``: one lesion box for ONE image file; ``boxes``: {image path: box} for several;
    ``show_anyway``: give verdicts for unusual inputs too (research use); ``site``: the images' site
    (see :class:`Predictor`).
    All images of the call are one batch for the site-shift check (:meth:`Predictor.check_batch`):
    a batch unlike every training site raises ONE :class:`SiteShiftWarning`."""
    if box is not None:
        files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if len(files) != 1 or Path(files[0]).is_dir() or boxes is not None:
            raise ConfigError("box= goes with exactly one image file (and no boxes=)",
                              "give boxes={path: box} for several images", param="box")
        boxes = {files[0]: make_box(box, "box")}
    pr = Predictor(model, backbone, threshold_malignant, flags, show_anyway=show_anyway, site=site)
    preds = pr.predict(paths, overlay_dir=overlay_dir, frame=frame, boxes=boxes)
    if pr.check_batch(preds).shifted:  # once per call: a folder's images are one batch
        warnings.warn(SHIFT_WARNING, SiteShiftWarning, stacklevel=3)
    return preds
