"""Lesion geometry: upsampling the GxG lesion map (G: the backbone spec's grid) and its area / bounding box.

Pure functions of arrays; shared by training (Dice), serving (lesion box) and reports.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from busi_lite.features.backbone import center_box

SEG_THRESHOLD = 0.5  # upsampled lesion probability counted as lesion (as in the Dice evaluation)


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """[G,G] float map -> [height,width] float32, bilinear."""
    im = Image.fromarray(np.asarray(grid, np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR))


def lesion_geometry(grid, width: int, height: int, max_side: int = 448) -> tuple[float, list | None]:
    """GxG lesion map ([G,G] or [G*G], row-major) -> (area fraction of the centre crop >= SEG_THRESHOLD,
    bbox [l,t,r,b] in original image pixels or None)."""
    cells = np.asarray(grid, np.float32)
    g = math.isqrt(cells.size)
    l, t, r, b = center_box(width, height)
    s = r - l
    res = max(1, min(s, max_side))
    up = upsample(cells.reshape(g, g), res, res) >= SEG_THRESHOLD
    area = float(up.mean())
    if not up.any():
        return area, None
    rows, cols = np.nonzero(up.any(axis=1))[0], np.nonzero(up.any(axis=0))[0]
    k = s / res
    box = [l + int(np.floor(cols[0] * k)), t + int(np.floor(rows[0] * k)),
           l + int(np.ceil((cols[-1] + 1) * k)), t + int(np.ceil((rows[-1] + 1) * k))]
    box = [min(box[0], r), min(box[1], b), min(box[2], r), min(box[3], b)]
    return area, box
