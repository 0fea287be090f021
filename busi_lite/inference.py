"""Predict: class probabilities, malignant verdict, lesion map and safety flags per image.

One shared flag function (:func:`compute_flags`) is used both for new images
(:class:`Predictor`) and for the held-out evaluation from the feature cache
(:func:`evaluate_flags`), so what ``busi-lite evaluate`` measures is what
``busi-lite predict`` prints.

Flags (each with a one-line reason):

* ``low_confidence`` - the highest class probability is below the model's
  calibrated ``low_confidence`` threshold (chosen on out-of-fold training
  predictions so that half of the training errors fall below it);
* ``mismatch``       - lesion-map models only, clear disagreement only: benign/malignant
  predicted while the lesion map's peak cell is below ``lesion_absent`` (the 5th
  percentile of out-of-fold peaks on lesion images), or normal predicted while it is
  above ``lesion_present`` (the 95th percentile on normal images);
* ``unusual_input``  - the out-of-distribution score of the pooled features is above
  the model's ``ood_threshold`` (99th percentile of out-of-fold training scores), or
  a pixel-level sanity rule fires (near-constant image, strongly coloured image:
  ultrasound is grey-scale).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import data as D
from .backbone import GRID, Backbone, center_box, preprocess
from .geometry import lesion_geometry, upsample

FLAG_NAMES = ("low_confidence", "mismatch", "unusual_input")
BATCH = 16
MASK_RE_PART = "_mask"   # directory expansion skips *_mask*.png (BUSI lesion masks)

# Pixel sanity rules (on the 224x224 network input, values 0..255).
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


# ---------------------------------------------------------------- flags (shared)

def thresholds(model, config: FlagConfig = FlagConfig()) -> dict:
    """Flag thresholds: the model's calibration unless overridden in ``config``."""
    cal = model.meta.get("calibration", {})
    ood = config.ood_threshold
    if ood is None:
        ood = model.ood.threshold if model.ood is not None else cal.get("ood_threshold")
    lesion = config.lesion_threshold if config.lesion_threshold is not None else cal.get("lesion_threshold")
    if lesion is None and model.has_lesion_map:
        lesion = 0.5
    low = config.low_confidence_threshold
    lesion = None if lesion is None else float(lesion)
    absent, present = lesion, lesion  # models calibrated before the two-sided rule: one cut
    if config.lesion_threshold is None:
        absent, present = cal.get("lesion_absent", lesion), cal.get("lesion_present", lesion)
    return {"low_confidence": float(cal.get("low_confidence", 0.0) if low is None else low),
            "lesion_threshold": lesion, "lesion_absent": absent, "lesion_present": present,
            "ood_threshold": None if ood is None else float(ood)}


def pixel_stats(x224: np.ndarray) -> dict:
    """Cheap statistics of one preprocessed input [224,224,3] in [-1,1]."""
    a = (np.asarray(x224, np.float32) + 1.0) * 127.5
    gray = a.mean(axis=2)
    return {"gray_std": float(gray.std()), "colour": float((a.max(axis=2) - a.min(axis=2)).mean())}


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

    proba [N,C]; lesion [N,49] or None (no lesion map); ood [N] or None; ``thr`` from
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
            hit = conf[i] < t
            c["low_confidence"] = "flagged" if hit else "passed"
            if hit:
                f.append(Flag("low_confidence", f"highest probability {conf[i]:.2f} ({classes[pred[i]]}) is "
                                                f"below {t:.2f}: the classes are hard to tell apart here"))
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
            if have_ood and ood[i] > t:
                reasons.append(f"out-of-distribution score {ood[i]:.2f} > {t:.2f}: "
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


# ---------------------------------------------------------------- inputs

def expand_inputs(inputs) -> tuple[list[Path], list[Prediction]]:
    """Files and folders -> (image paths, error predictions for unusable arguments).

    A folder expands to its image files (sorted, not recursive), skipping lesion
    masks (``*_mask*``) and hidden files.
    """
    paths, errors = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in D.IMAGE_EXTS
                            and MASK_RE_PART not in f.stem and not f.name.startswith(".")),
                           key=lambda f: D._natural_key(f.name))
            if not found:
                errors.append(Prediction(str(p), False, f"{p}: folder holds no image files "
                                         f"({', '.join(sorted(D.IMAGE_EXTS))}) -> pass image files or another folder"))
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            errors.append(Prediction(str(p), False, f"{p}: file not found -> check the path"))
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
        if t is not None and not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"malignant threshold must be within [0, 1], got {t}")
        self.malignant_threshold = None if t is None else float(t)
        self.flag_config = flags
        self.thresholds = thresholds(self.model, flags)
        self.batch_size = max(1, int(batch_size))

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
        writer = _OverlayWriter(overlay_dir, [f for k, f in ordered if k == "file"]) if overlay_dir else None
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
                            writer.write(inp, p)
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


def predict_images(paths, model=None, backbone=None, threshold_malignant=None,
                   flags: FlagConfig = FlagConfig(), overlay_dir=None) -> list[Prediction]:
    """Classify image files / folders; see :class:`Predictor` and :class:`Prediction`."""
    return Predictor(model, backbone, threshold_malignant, flags).predict(paths, overlay_dir=overlay_dir)


# ---------------------------------------------------------------- overlays

class _OverlayWriter:
    """Writes OUTDIR/<stem>_overlay.png per image; never an input file, never twice the same name."""

    def __init__(self, outdir, inputs):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.reserved = {Path(p).resolve() for p in inputs}
        self.used = set()

    def _name(self, path: Path) -> Path:
        k = 0
        while True:
            cand = self.outdir / f"{path.stem}_overlay{'' if k == 0 else f'-{k}'}.png"
            rc = cand.resolve()
            if rc not in self.reserved and rc not in self.used:
                self.used.add(rc)
                return cand
            k += 1

    def write(self, inp: _Input, pred: Prediction) -> None:
        out = self._name(inp.path)
        im = render_overlay(inp.rgb, pred)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
        im.save(tmp)
        os.replace(tmp, out)
        pred.overlay = str(out)


def render_overlay(rgb: np.ndarray, pred: Prediction, max_side: int = 1024):
    """The image with the lesion heat map (red, alpha) on the centre crop, the crop's
    outline, the lesion box, and the verdict + flags written on a band at the top."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb).convert("RGB")
    w, h = im.size
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)

    def sc(v):
        return int(round(v * scale))

    l, t, r, b = [sc(v) for v in pred.crop_box]
    base = im.convert("RGBA")
    if pred.lesion is not None and r > l and b > t:
        heat = np.clip(upsample(np.asarray(pred.lesion, np.float32), r - l, b - t), 0, 1)
        layer = np.zeros((b - t, r - l, 4), np.uint8)
        layer[..., 0] = 255
        layer[..., 3] = (heat * 150).astype(np.uint8)
        over = Image.new("RGBA", base.size, (0, 0, 0, 0))
        over.paste(Image.fromarray(layer, "RGBA"), (l, t))
        base = Image.alpha_composite(base, over)
    d = ImageDraw.Draw(base)
    d.rectangle([l, t, r - 1, b - 1], outline=(255, 255, 0, 255), width=1)
    if pred.lesion_bbox:
        bl, bt, br, bb = [sc(v) for v in pred.lesion_bbox]
        d.rectangle([bl, bt, max(bl, br - 1), max(bt, bb - 1)], outline=(255, 64, 64, 255), width=2)
    import textwrap

    size = max(10, min(18, base.size[0] // 40))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    width = max(20, int((base.size[0] - 8) / (0.55 * size)))  # characters per line, roughly
    white, red = (255, 255, 255, 255), (255, 80, 80, 255)
    lines = [(t, red if pred.malignant_alert else white) for t in textwrap.wrap(verdict_line(pred), width)]
    for f in pred.flags:
        lines += [(t, red) for t in textwrap.wrap(f"! {f.name}: {f.reason}", width, subsequent_indent="   ")]
    band = (size + 4) * len(lines) + 6
    canvas = Image.new("RGBA", (base.size[0], base.size[1] + band), (0, 0, 0, 255))
    canvas.paste(base, (0, band))
    d = ImageDraw.Draw(canvas)
    for i, (line, colour) in enumerate(lines):
        d.text((4, 3 + i * (size + 4)), line, fill=colour, font=font)
    return canvas.convert("RGB")


def verdict_line(pred: Prediction) -> str:
    if not pred.ok:
        return f"ERROR {pred.error}"
    probs = " ".join(f"{c} {v:.2f}" for c, v in pred.proba.items())
    alert = ""
    if pred.malignant_alert is not None:
        alert = f"  MALIGNANT ALERT (p >= {pred.malignant_threshold:.3f})" if pred.malignant_alert else \
            f"  no malignant alert (p < {pred.malignant_threshold:.3f})"
    return f"{pred.label.upper()}  ({probs}){alert}"


# ---------------------------------------------------------------- evaluation of the flags

def _share(num, den):
    return float(num / den) if den else float("nan")


def evaluate_flags(model, cache, config: FlagConfig = FlagConfig(), threshold_malignant=None) -> dict:
    """Flags on the model's held-out test images (raw view, from the cache): how the
    errors distribute over flagged and unflagged images.

    Rebuilds the model's split from its sidecar and refuses a cache that holds other
    images (digest mismatch) or comes from another backbone.
    """
    from . import metrics as M
    from .model import ModelError

    model.check_backbone(cache.backbone_sha256, f"cache {cache.path}")
    sp_meta = model.meta.get("split") or {}
    if "seed" not in sp_meta:
        raise ModelError("the model's sidecar has no split (seed, test_fraction) -> retrain it with this version")
    if tuple(cache.classes) != tuple(model.classes):
        raise ModelError(f"cache {cache.path} has classes {cache.classes}, the model {model.classes} -> "
                         "use the cache the model was trained on")
    sp = cache.split(int(sp_meta["seed"]), float(sp_meta.get("test_fraction", 0.15)))
    digest = sp.digest(cache.paths)
    if sp_meta.get("digest") and digest != sp_meta["digest"]:
        raise ModelError(f"cache {cache.path} gives split {digest} for seed {sp_meta['seed']}, the model was "
                         f"trained on split {sp_meta['digest']}: the cache holds other images, so its 'test' "
                         "images may have been used for training -> evaluate with the cache the model was "
                         "trained on (or retrain on this cache)")
    rows = sp.test
    y = cache.labels[rows]
    r = model.predict_features(cache.spatial("raw", rows))
    proba = r["proba"]
    ood = model.ood.score(r["pooled"]) if model.ood is not None else None
    thr = thresholds(model, config)
    flags, checks = compute_flags(proba, r["lesion"], ood, model.classes, thr, config, pixel=None)
    cal = model.meta.get("calibration", {})
    t_mal = threshold_malignant if threshold_malignant is not None else cal.get("malignant_threshold")
    mal = model.classes.index("malignant")
    pred = proba.argmax(axis=1)
    pred_op = M.predict_labels(proba, t_mal, mal) if t_mal is not None else pred
    err = pred != y
    miss = (y == mal) & (pred != mal)
    miss_op = (y == mal) & (pred_op != mal)
    n = len(y)

    def stats(sel: np.ndarray) -> dict:
        un = ~sel
        return {
            "n_flagged": int(sel.sum()), "n_unflagged": int(un.sum()),
            "share_of_images": _share(sel.sum(), n),
            "accuracy_flagged": _share((~err & sel).sum(), sel.sum()),
            "accuracy_unflagged": _share((~err & un).sum(), un.sum()),
            "errors_flagged": int((err & sel).sum()),
            "share_of_errors": _share((err & sel).sum(), err.sum()),
            "missed_malignant_argmax_flagged": int((miss & sel).sum()),
            "share_of_missed_malignant_argmax": _share((miss & sel).sum(), miss.sum()),
            "missed_malignant_op_flagged": int((miss_op & sel).sum()),
            "share_of_missed_malignant_op": _share((miss_op & sel).sum(), miss_op.sum()),
        }

    per_flag = {}
    for name in FLAG_NAMES:
        states = {c[name] for c in checks}
        if states <= {"disabled", "not_applicable"}:
            per_flag[name] = {"status": states.pop() if states else "not_applicable"}
            continue
        sel = np.array([any(f.name == name for f in fl) for fl in flags], dtype=bool)
        per_flag[name] = dict(status="active", **stats(sel))
    any_sel = np.array([bool(fl) for fl in flags], dtype=bool)
    op = M.malignant_metrics(y, pred_op, mal)
    return {
        "model": model.meta.get("config", {}).get("name"), "cache": str(cache.path), "split_digest": digest,
        "n": int(n), "n_errors": int(err.sum()), "accuracy": _share((~err).sum(), n),
        "n_missed_malignant_argmax": int(miss.sum()), "n_missed_malignant_op": int(miss_op.sum()),
        "thresholds": dict(thr, malignant=None if t_mal is None else float(t_mal)),
        "pixel_checks": "not applied (features come from the cache, not from image files)",
        "flags": per_flag, "any_flag": stats(any_sel),
        "operating_point": {"threshold": None if t_mal is None else float(t_mal), "recall": op["recall"],
                            "far": op["far"], "precision": op["precision"],
                            "tp": op["tp"], "fn": op["fn"], "fp": op["fp"], "tn": op["tn"]},
        "per_image": [{"path": cache.paths[i], "y": model.classes[int(yy)], "pred": model.classes[int(pp)],
                       "flags": [f.name for f in fl]} for i, yy, pp, fl in zip(rows, y, pred, flags)],
    }
