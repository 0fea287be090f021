"""Overlays: the image with its lesion heat map, crop outline, lesion box and verdict.

:func:`render_overlay` draws one :class:`busi_lite.inference.Prediction` onto its
RGB image (Pillow only); :class:`OverlayWriter` writes OUTDIR/<stem>_overlay.png
atomically, never over an input file and never twice the same name;
:func:`verdict_line` is the one-line verdict the CLI and the overlays print.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .geometry import upsample

if TYPE_CHECKING:
    from .inference import Prediction


class OverlayWriter:
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

    def write(self, path, rgb: np.ndarray, pred) -> Path:
        """Render ``pred`` on ``rgb`` [H,W,3] uint8, write it, set ``pred.overlay``."""
        out = self._name(Path(path))
        im = render_overlay(rgb, pred)
        with atomic_path(out) as tmp:
            im.save(tmp, format="PNG")
        pred.overlay = str(out)
        return out


def render_overlay(rgb: np.ndarray, pred: "Prediction", max_side: int = 1024):
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


def verdict_line(pred: "Prediction") -> str:
    if not pred.ok:
        return f"ERROR {pred.error}"
    probs = " ".join(f"{c} {v:.2f}" for c, v in pred.proba.items())
    alert = ""
    if pred.malignant_alert is not None:
        alert = f"  MALIGNANT ALERT (p >= {pred.malignant_threshold:.3f})" if pred.malignant_alert else \
            f"  no malignant alert (p < {pred.malignant_threshold:.3f})"
    return f"{pred.label.upper()}  ({probs}){alert}"
