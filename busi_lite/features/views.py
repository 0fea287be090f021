"""Cache views: the extra network inputs extracted per image beside ``raw``.

Mask-fused views: extra TRAINING images built from an image and its lesion mask.

- ``roi``:    square crop around the mask's bounding box plus a margin;
- ``masked``: tissue outside a dilated mask darkened to a quarter (// DARKEN);
- ``mask``:   the mask itself as a white-on-black image (what a Teachable
              Machine user would upload).

Each view also returns its lesion mask in its own coordinates, so the grid's
segmentation target can be computed for it. Views exist only for images with
a non-empty lesion mask and are never used for evaluation.

Input views (the network input itself is transformed, see busi_lite.features.preprocess):

- ``flip``: the mirrored network input of the raw image (every image); flip averaging
  trains on raw + flip and averages the two probabilities at evaluation.
- ``box`` / ``box_flip``: the lesion mask's bounding box + BOX_MARGIN, resized to the input size
  (Preprocessing(name)(rgb, box=mask_box(mask))), and its mirror. Images with a mask only.
- ``box_j0``, ``box_j1`` (+ ``_flip``): TRAINING boxes, the mask box jittered by
  JITTER_TRAIN (shift and scale), so a hand-drawn box works as well.
- ``box_s10``, ``box_s20``, ``box_s30``: EVALUATION-only sloppy boxes (jitter 0.1, 0.2, 0.3)
  for measuring what a sloppy box costs; never trained on.
Jitter draws come from ``box_rng(view, path)``: a fixed seed per view and the image's
relative path, so extraction is deterministic and an incremental extract reuses rows exactly.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from busi_lite.features.preprocess import jitter_box, mask_box

VIEWS = ("roi", "masked", "mask")
JITTER_TRAIN = 0.2
BOX_JITTER = {"box_j0": JITTER_TRAIN, "box_j1": JITTER_TRAIN, "box_s10": 0.1, "box_s20": 0.2, "box_s30": 0.3}
BOX_SEEDS = {"box_j0": 1101, "box_j1": 1102, "box_s10": 2110, "box_s20": 2120, "box_s30": 2130}
BOX_VIEWS = ("box", "box_flip", "box_j0", "box_j1", "box_j0_flip", "box_j1_flip", "box_s10", "box_s20", "box_s30")
TRAIN_BOX_VIEWS = ("box_j0", "box_j1", "box_j0_flip", "box_j1_flip")  # what a box head trains on (with box, box_flip)
EVAL_BOX_VIEWS = ("box_s10", "box_s20", "box_s30")  # sloppy boxes: evaluation only
INPUT_VIEWS = ("flip",) + BOX_VIEWS
ALL_VIEWS = VIEWS + INPUT_VIEWS  # every view a cache may hold besides 'raw' (extract's default)


def box_rng(view: str, path: str) -> np.random.Generator:
    """The jitter generator of a box view for one image: fixed seed per view + crc32 of its relative path."""
    return np.random.default_rng([BOX_SEEDS[view], zlib.crc32(str(path).encode())])


def view_boxes(box, width: int, height: int, path: str, views) -> dict:
    """{box view base name (no _flip): lesion box (x0, y0, x1, y1)} for the box views in ``views``;
    ``box`` is the mask box itself, the others jittered (busi_lite.features.preprocess.jitter_box)."""
    out = {}
    for v in views:
        base = v[:-5] if v.endswith("_flip") else v
        if base in out or not base.startswith("box"):
            continue
        out[base] = box if base == "box" else jitter_box(box, width, height, box_rng(base, path), BOX_JITTER[base])
    return out


ROI_MARGIN = 0.25     # of the bounding box's longer side, on each side
DILATE = 0.04         # dilation radius for `masked`, as a share of the image's shorter side
DARKEN = 4          # outside the dilated mask, pixels are divided by this


def roi_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Square box around the lesion plus margin (may extend past the image)."""
    l, t, r, b = mask_box(mask)  # (left, top, right, bottom), exclusive
    side = int(round(max(r - l, b - t) * (1 + 2 * ROI_MARGIN)))
    side = max(side, 32)
    cx, cy = (l + r) // 2, (t + b) // 2
    return cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side


def _crop(a: np.ndarray, box) -> np.ndarray:
    """Crop with zero padding where the box leaves the array."""
    l, t, r, b = box
    out = np.zeros((b - t, r - l) + a.shape[2:], dtype=a.dtype)
    H, W = a.shape[:2]
    sl, st, sr, sb = max(l, 0), max(t, 0), min(r, W), min(b, H)
    out[st - t:sb - t, sl - l:sr - l] = a[st:sb, sl:sr]
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2*radius+1) square (box blur > 0)."""
    if radius <= 0:
        return mask.copy()
    from PIL import ImageFilter  # extraction only: serving imports this module for the view names

    im = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(radius))
    return np.asarray(im) > 0


def make_views(rgb: np.ndarray, mask: np.ndarray, views=VIEWS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """rgb uint8 [H,W,3], mask bool [H,W] (non-empty) -> {view: (rgb_view, mask_view)}."""
    if mask is None or not mask.any():
        return {}
    out = {}
    for v in views:
        if v == "roi":
            box = roi_box(mask)
            out[v] = (_crop(rgb, box), _crop(mask, box))
        elif v == "masked":
            r = max(1, int(DILATE * min(mask.shape)))
            keep = dilate(mask, r)
            out[v] = (np.where(keep[..., None], rgb, rgb // DARKEN), mask)
        elif v == "mask":
            out[v] = (np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2), mask)
        else:
            raise ValueError(f"unknown view {v!r}; choose from {', '.join(VIEWS)}")
    return out
