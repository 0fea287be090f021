"""Overlays: the image with its lesion heat map, crop outline, lesion box, verdict and legend.

:func:`render_overlay` draws one :class:`busi_lite.serving.inference.Prediction` onto its
RGB image (Pillow only): a text band on top (file/frame, label, malignant screen,
flags; wrapped between phrases, never inside one when it fits), the picture, and a
legend band below (what every colour and line means, with a colour scale for the
lesion map). :class:`OverlayWriter` writes OUTDIR/<stem>_overlay.png (frames of a
multi-frame DICOM: <stem>_f<frame, 3 digits>_overlay.png) atomically, never over an input file and never twice
the same name; names come from the file name only, never from DICOM attributes.
The words come from :mod:`busi_lite.serving.verdict` (the CLI prints the same): the research
notice, the model's name/digest and its threshold's origin, then one answer (most probable class;
sensitive screen), or "VERDICT WITHHELD" and why for an unusual input.

Drawing: with a lesion map the picture is two panels, the plain image on the left
and the same image with the map on the right, so the map never hides the lesion;
the map is translucent (no colour below p 0.2, at most 35% opacity, yellow -> red)
with an opaque red outline where p >= 0.5; the centre crop is a dashed grey frame (it is where the model looks,
not a finding); the lesion-map box is cyan. For DICOM the image drawn is the
ultrasound region (``dicom_crop``) and boxes are shifted from frame pixels into it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busi_lite.common.atomic import atomic_path
from busi_lite.serving.geometry import SEG_THRESHOLD, upsample
from busi_lite.serving.prediction import Prediction
from busi_lite.serving.verdict import (
    NOTICE,
    answer_parts,
    label_text,
    probs_text,
    provenance_text,
    screen_parts,
)

HEAT_FLOOR, HEAT_ALPHA = 0.2, 0.35     # no colour below HEAT_FLOOR; opacity at p = 1
GAP = 6                                # px between the plain image and the lesion-map panel
MIN_SIDE = 512                         # small images are enlarged so the text stays legible
WHITE, GREY, RED, GREEN, ORANGE = (255, 255, 255), (170, 170, 170), (255, 90, 90), (120, 220, 120), (255, 170, 60)
YELLOW = (255, 220, 80)
CROP, OUTLINE, BOX = (200, 200, 200), (255, 40, 40), (0, 220, 255)


class OverlayWriter:
    """Writes OUTDIR/<stem>_overlay.png per prediction; never an input file, never twice the same name."""

    def __init__(self, outdir, inputs):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.reserved = {Path(p).resolve() for p in inputs}
        self.used = set()

    def _name(self, path: Path, frame: int | None = None) -> Path:
        stem = path.stem if frame is None else f"{path.stem}_f{frame:03d}"
        k = 0
        while True:
            cand = self.outdir / f"{stem}_overlay{'' if k == 0 else f'-{k}'}.png"
            rc = cand.resolve()
            if rc not in self.reserved and rc not in self.used:
                self.used.add(rc)
                return cand
            k += 1

    def write(self, path, rgb: np.ndarray, pred) -> Path:
        """Render ``pred`` on ``rgb`` [H,W,3] uint8 (DICOM: the region crop), write it, set ``pred.overlay``."""
        multi = (getattr(pred, "n_frames", None) or 1) > 1
        out = self._name(Path(path), pred.frame if multi else None)
        im = render_overlay(rgb, pred)
        with atomic_path(out) as tmp:
            im.save(tmp, format="PNG")
        pred.overlay = str(out)
        return out


# ---------------------------------------------------------------- drawing

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(parts: list[str], font, width: float) -> list[str]:
    """Pack phrases into lines no wider than ``width`` px; a phrase is split (between
    words) only when it alone is too wide."""
    lines, cur = [], ""
    for part in parts:
        cand = f"{cur} {part}" if cur else part
        if font.getlength(cand) <= width:
            cur = cand
            continue
        if cur:
            lines.append(cur)
        cur = ""
        for word in part.split(" "):
            cand = f"{cur} {word}" if cur else word
            if cur and font.getlength(cand) > width:
                lines.append(cur)
                cand = "   " + word
            cur = cand
    if cur:
        lines.append(cur)
    return lines


def heat_rgba(heat: np.ndarray) -> np.ndarray:
    """Lesion probabilities [H,W] in [0,1] -> RGBA uint8 [H,W,4]: yellow -> red, translucent."""
    v = np.clip(heat, 0, 1)
    out = np.zeros(v.shape + (4,), np.uint8)
    out[..., 0] = 255
    out[..., 1] = (220 * (1 - v)).astype(np.uint8)
    out[..., 3] = (255 * HEAT_ALPHA * np.clip((v - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)).astype(np.uint8)
    return out


def _edge(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (2 px thick)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    e = mask & ~inner
    e[1:] |= e[:-1]
    e[:, 1:] |= e[:, :-1]
    return e & mask


def _dashed_rect(d, box, colour, dash: int = 6) -> None:
    l, t, r, b = box
    for x in range(l, r, 2 * dash):
        d.line([(x, t), (min(x + dash, r), t)], fill=colour)
        d.line([(x, b), (min(x + dash, r), b)], fill=colour)
    for y in range(t, b, 2 * dash):
        d.line([(l, y), (l, min(y + dash, b))], fill=colour)
        d.line([(r, y), (r, min(y + dash, b))], fill=colour)


def render_overlay(rgb: np.ndarray, pred: Prediction, max_side: int = 1024):
    """The image with the lesion map on the centre crop, the crop's outline, the lesion box,
    the verdict and flags on a band at the top and a legend with a colour scale below."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb).convert("RGB")
    w, h = im.size
    scale = min(max_side / max(w, h), max(1.0, MIN_SIDE / max(w, h)))
    if scale != 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    ox, oy = (pred.dicom_crop[0], pred.dicom_crop[1]) if getattr(pred, "dicom_crop", None) else (0, 0)

    def sc(box):  # original (frame) pixels -> pixels of the drawn image
        return [int(round((v - o) * scale)) for v, o in zip(box, (ox, oy, ox, oy))]

    l, t, r, b = sc(pred.crop_box)
    plain = im.convert("RGBA")
    base = plain
    has_map = pred.lesion is not None and r > l and b > t
    if has_map:
        heat = np.clip(upsample(np.asarray(pred.lesion, np.float32), r - l, b - t), 0, 1)
        layer = heat_rgba(heat)
        layer[_edge(heat >= SEG_THRESHOLD)] = OUTLINE + (255,)
        over = Image.new("RGBA", base.size, (0, 0, 0, 0))
        over.paste(Image.fromarray(layer, "RGBA"), (l, t))
        base = Image.alpha_composite(base, over)
    d = ImageDraw.Draw(base)
    _dashed_rect(d, (l, t, r - 1, b - 1), CROP + (255,))
    if pred.lesion_bbox:
        bl, bt, br, bb = sc(pred.lesion_bbox)
        d.rectangle([bl, bt, max(bl, br - 1), max(bt, bb - 1)], outline=BOX + (255,), width=2)
    if has_map:  # plain image | image with the map
        pair = Image.new("RGBA", (2 * base.size[0] + GAP, base.size[1]), (0, 0, 0, 255))
        pair.paste(plain, (0, 0))
        pair.paste(base, (base.size[0] + GAP, 0))
        base = pair

    W = base.size[0]
    size = max(12, min(18, W // 40))
    font = _font(size)
    step = size + 5
    width = W - 10
    head = Path(pred.path).name + ("" if getattr(pred, "frame", None) is None
                                   else f" - frame {pred.frame} of {pred.n_frames}")
    alert = RED if pred.malignant_alert else (GREEN if pred.malignant_alert is False else GREY)
    lines = [(s, GREY) for s in _wrap([head], font, width)]
    lines += [(s, YELLOW) for s in _wrap([NOTICE.upper(), provenance_text(pred)], font, width)]
    if pred.withheld:
        lines += [(s, YELLOW) for s in _wrap(answer_parts(pred), font, width)]
    else:
        lines += [(s, WHITE) for s in _wrap([label_text(pred) + ",", probs_text(pred) + ";"], font, width)]
        lines += [(s, alert) for s in _wrap(screen_parts(pred), font, width)]
    for f in pred.flags:
        lines += [(s, ORANGE) for s in _wrap([f"FLAG {f.name}:"] + f.reason.split(" "), font, width)]
    top = step * len(lines) + 6
    legend = _legend_rows(font, width, has_map, bool(pred.lesion_bbox), size)
    bottom = sum(hgt for hgt, _ in legend) + 8
    canvas = Image.new("RGBA", (W, base.size[1] + top + bottom), (0, 0, 0, 255))
    canvas.paste(base, (0, top))
    d = ImageDraw.Draw(canvas)
    for i, (line, colour) in enumerate(lines):
        d.text((5, 3 + i * step), line, fill=colour + (255,), font=font)
    y = top + base.size[1] + 5
    for hgt, draw in legend:
        draw(canvas, d, 5, y)
        y += hgt
    return canvas.convert("RGB")


def _legend_rows(font, width: float, has_map: bool, has_box: bool, size: int) -> list:
    """Legend rows as (height, draw(canvas, draw, x, y)): the colour scale, then the line keys."""
    from PIL import Image

    rows = []
    sw = 2 * size   # swatch width
    if has_map:
        bar_w, bar_h = int(min(260, width * 0.45)), size

        small = _font(max(10, size - 3))

        def scale_row(canvas, d, x, y):
            d.text((x, y), "lesion map p:", fill=WHITE + (255,), font=font)
            x0 = x + int(font.getlength("lesion map p: ")) + 4
            v = np.linspace(0, 1, bar_w, dtype=np.float32)[None, :].repeat(bar_h, 0)
            grey = Image.new("RGBA", (bar_w, bar_h), (110, 110, 110, 255))
            canvas.paste(Image.alpha_composite(grey, Image.fromarray(heat_rgba(v), "RGBA")), (x0, y))
            d.line([(x0 + int(SEG_THRESHOLD * (bar_w - 1)), y), (x0 + int(SEG_THRESHOLD * (bar_w - 1)), y + bar_h)],
                   fill=OUTLINE + (255,), width=2)
            for val in (0, HEAT_FLOOR, SEG_THRESHOLD, 1):
                tx = x0 + int(val * (bar_w - 1))
                d.line([(tx, y + bar_h), (tx, y + bar_h + 3)], fill=WHITE + (255,))
                label = f"{val:g}"
                d.text((tx - small.getlength(label) / 2, y + bar_h + 3), label, fill=GREY + (255,), font=small)
            d.text((x0 + bar_w + 10, y), "(no colour below 0.2)", fill=GREY + (255,), font=small)
        rows.append((bar_h + size + 6, scale_row))
    items = []
    if has_map:
        items.append(("none", GREY, "left: the image; right: with the lesion map"))
        items.append(("outline", OUTLINE, "red outline: lesion map p >= 0.5"))
    if has_box:
        items.append(("box", BOX, "cyan box: around the p >= 0.5 area"))
    items.append(("dash", CROP, "dashed grey: centre crop the model sees (not a finding)"))
    if not has_map:
        items.append(("none", GREY, "no lesion map (this model has none)"))
    # flow the items into rows of at most `width` px
    cur, cur_w = [], 0
    packed = []
    for it in items:
        iw = sw + 6 + int(font.getlength(it[2])) + 18
        if cur and cur_w + iw > width:
            packed.append(cur)
            cur, cur_w = [], 0
        cur.append(it)
        cur_w += iw
    if cur:
        packed.append(cur)
    for row in packed:
        def key_row(canvas, d, x, y, row=row):
            for kind, colour, text in row:
                c = colour + (255,)
                mid = y + size // 2
                if kind == "dash":
                    for sx in range(x, x + sw, 8):
                        d.line([(sx, mid), (min(sx + 4, x + sw), mid)], fill=c)
                elif kind == "box":
                    d.rectangle([x, y + 2, x + sw, y + size - 2], outline=c, width=2)
                elif kind == "outline":
                    d.line([(x, mid), (x + sw, mid)], fill=c, width=2)
                d.text((x + sw + 6, y), text, fill=WHITE + (255,), font=font)
                x += sw + 6 + int(font.getlength(text)) + 18
        rows.append((size + 6, key_row))
    return rows
