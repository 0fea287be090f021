"""Named, versioned preprocessings: decoded RGB image (+ optional lesion box) -> network input.

Contract of every preprocessing: RGB uint8 [H,W,3] -> float32 [S,S,3] in [-1, 1] (NHWC; S the
backbone spec's input_size, ``Preprocessing.size``, 224 for the default backbone), deterministic,
no state. Its NAME is stored in every feature cache and every model; code that
meets two different names refuses to mix them.

Geometry (shared by all versions):
  - whole image: the centred square crop resized to SxS (backbone.center_crop);
  - lesion box:  the box plus ``BOX_MARGIN`` of its width/height on each side, clamped to the
    image, resized (not cropped: the aspect ratio is not kept) to SxS, same filter.
Intensity:
  - ``tm-centercrop-bilinear-aa-v1`` (v1, Teachable Machine's; the default): x / 127.5 - 1 per channel.
  - ``gray-p1p99-centercrop-bilinear-aa-v2`` (v2, contrast-normalised): grey = mean of R, G, B of
    the resized crop; a, b = its 1st and 99th percentiles; clip((grey - a) / max(b - a, 1), 0, 1) * 255
    fed as three equal channels, then x / 127.5 - 1. Removes scanner gain/contrast differences.
Mirror: ``mirror(x)`` flips the network input left-right (flip averaging works on inputs, so it
is the same for every version).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.features.backbone import center_box, crop_resize
from busi_lite.features.spec import DEFAULT, PREPROCESS_V1, PREPROCESS_V2

V1 = PREPROCESS_V1  # "tm-centercrop-bilinear-aa-v1"
V2 = PREPROCESS_V2  # "gray-p1p99-centercrop-bilinear-aa-v2"
SHORT = {"v1": V1, "v2": V2}
BOX_MARGIN = 0.30


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BusiError(f"expected an RGB uint8 image [H,W,3], got {rgb.dtype} {rgb.shape}",
                        "decode images with busi_lite.io.data.read_rgb")
    return rgb


def check_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Validate a lesion box (x0, y0, x1, y1) in image pixels (x1, y1 exclusive); clamp to the image."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ConfigError(f"lesion box {box!r} is not four numbers", "give it as x0,y0,x1,y1 in pixels",
                          param="box") from None
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise ConfigError(f"lesion box {box!r} has a non-finite number", "give it as x0,y0,x1,y1 in pixels",
                          param="box")
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ConfigError(f"lesion box {box!r} is empty or outside the {width}x{height} image",
                          "draw the box around the lesion (x0 < x1, y0 < y1, inside the image)", param="box")
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


def margin_box(box, width: int, height: int, margin: float = BOX_MARGIN) -> tuple[int, int, int, int]:
    """The crop region: box plus ``margin`` of its width/height on each side, clamped to the image."""
    x0, y0, x1, y1 = check_box(box, width, height)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (max(0, int(round(x0 - mx))), max(0, int(round(y0 - my))),
            min(width, int(round(x1 + mx))), min(height, int(round(y1 + my))))


def jitter_box(box, width: int, height: int, rng: np.random.Generator, amount: float = 0.2):
    """A hand-drawn-like box: centre shifted by up to ``amount`` of the side, each side scaled
    by a factor in [1 - amount, 1 + amount]; clamped to the image. rng is passed explicitly."""
    x0, y0, x1, y1 = check_box(box, width, height)
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.uniform(-amount, amount) * w
    cy = (y0 + y1) / 2 + rng.uniform(-amount, amount) * h
    w *= rng.uniform(1 - amount, 1 + amount)
    h *= rng.uniform(1 - amount, 1 + amount)
    w, h = max(w, 4.0), max(h, 4.0)
    nb = (max(0, int(round(cx - w / 2))), max(0, int(round(cy - h / 2))),
          min(width, int(round(cx + w / 2))), min(height, int(round(cy + h / 2))))
    return nb if nb[2] - nb[0] >= 2 and nb[3] - nb[1] >= 2 else (x0, y0, x1, y1)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), exclusive, of a boolean mask [H,W]; None when empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _resized(rgb: np.ndarray, box, size: int) -> np.ndarray:
    """uint8 [S,S,3]: centre square crop, or the lesion box + margin, resized (antialiased bilinear)."""
    h, w = rgb.shape[:2]
    region = center_box(w, h) if box is None else margin_box(box, w, h)
    im = crop_resize(Image.fromarray(rgb), region, size)
    return np.asarray(im)


def _v1(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 127.5 - 1.0


def _v2(a: np.ndarray) -> np.ndarray:
    g = a.astype(np.float32).mean(axis=2)
    lo, hi = np.percentile(g, [1, 99])
    g = np.clip((g - lo) / max(hi - lo, 1.0), 0.0, 1.0) * 255.0
    return np.repeat(g[..., None], 3, axis=2) / 127.5 - 1.0


_INTENSITY = {V1: _v1, V2: _v2}


@dataclass(frozen=True)
class Preprocessing:
    """One named preprocessing. ``__call__(rgb, box=None)`` -> float32 [size,size,3] in [-1, 1]
    (``size``: the backbone spec's input_size)."""
    name: str = V1
    size: int = DEFAULT.input_size

    def __post_init__(self):
        if self.name not in _INTENSITY:
            raise ConfigError(f"unknown preprocessing {self.name!r}",
                              f"choose one of {', '.join(sorted(SHORT))} ({', '.join(_INTENSITY)})",
                              param="preprocess")

    @classmethod
    def named(cls, name: str, size: int = DEFAULT.input_size) -> "Preprocessing":
        """'v1' / 'v2' or a full name."""
        return cls(SHORT.get(name, name), size)

    def __call__(self, rgb, box=None) -> np.ndarray:
        return self.intensity(self.resized(rgb, box))

    def resized(self, rgb, box=None) -> np.ndarray:
        """The geometry step alone: RGB uint8 [H,W,3] -> uint8 [S,S,3] (4x smaller than the input)."""
        return _resized(_check_rgb(rgb), box, self.size)

    def intensity(self, a: np.ndarray) -> np.ndarray:
        """The intensity step alone: one resized() image -> float32 [S,S,3] in [-1, 1].
        ``pp(rgb, box) == pp.intensity(pp.resized(rgb, box))``; it commutes with :func:`mirror`."""
        return _INTENSITY[self.name](a).astype(np.float32, copy=False)


def mirror(x: np.ndarray) -> np.ndarray:
    """Left-right mirror of network input(s) [..., S, S, 3]."""
    return np.ascontiguousarray(np.asarray(x)[..., ::-1, :])
