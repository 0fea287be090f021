"""Backbone: the frozen ONNX feature extractor, held to its :class:`BackboneSpec` (features.spec).

Geometry every preprocessing shares (S = the spec's input_size, 224 for the default):
  1. decode to RGB uint8 (io.imread.read_rgb: EXIF orientation, 12/16-bit -> 8-bit,
     alpha on black, palette/grayscale -> RGB);
  2. centre-crop to a square of side min(H, W) (center_crop, the one crop);
  3. resize to SxS with antialiasing (Pillow BILINEAR with a support
     scaled to the downsampling factor, i.e. antialiased);
  4. intensity per preprocessing (features.preprocess), float32 in [-1, 1], NHWC.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from busi_lite.common.errors import BusiError
from busi_lite.features.spec import DEFAULT, BackboneSpec, spec_for_sha

DEFAULT_BACKBONE = DEFAULT.file  # file name of the packaged default (busi_lite.common.resources)
ENV_BACKBONE = "BUSI_LITE_BACKBONE"


def how_to_get(spec: BackboneSpec = DEFAULT) -> str:
    return f"{spec.how_to_get or 'get ' + spec.file}, then give its path as the backbone or set {ENV_BACKBONE}=PATH"


HOW_TO_GET = how_to_get(DEFAULT)


class BackboneError(BusiError):
    """The backbone model is missing or does not fit: what -> fix."""


def center_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred square crop."""
    s = min(width, height)
    left, top = (width - s) // 2, (height - s) // 2
    return left, top, left + s, top + s


def crop_resize(image: Image.Image, box=None, size: int = DEFAULT.input_size) -> Image.Image:
    """The one crop-and-resize: region ``box`` (left, top, right, bottom; None: the
    centred square, side min(H, W)) of a PIL image (any mode) resized to ``size`` x
    ``size`` with antialiased bilinear (steps 2-3 above). Images, masks, lesion-box
    crops and report thumbnails all go through it, so they align."""
    return image.resize((size, size), Image.Resampling.BILINEAR,
                        box=center_box(*image.size) if box is None else tuple(box))


def center_crop(image: Image.Image, size: int = DEFAULT.input_size) -> Image.Image:
    """The centred square of ``image`` resized to ``size`` x ``size`` (:func:`crop_resize`)."""
    return crop_resize(image, None, size)


def preprocess(rgb: np.ndarray, size: int = DEFAULT.input_size) -> np.ndarray:
    """RGB uint8 [H,W,3] -> float32 [S,S,3] in [-1, 1]: the v1 preprocessing of the whole image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 [H,W,3], got {rgb.dtype} {rgb.shape}")
    return np.asarray(center_crop(Image.fromarray(rgb), size), dtype=np.float32) / 127.5 - 1.0


def resolve_path(backbone=None) -> Path:
    """--backbone > $BUSI_LITE_BACKBONE > the packaged backbone (busi_lite.common.resources)."""
    from busi_lite.common import resources

    r = resources.resolve("backbone", backbone)
    if r.path.is_file():
        return r.path
    if r.source == "packaged":
        raise BackboneError(f"no backbone model: the packaged {r.path} is missing (broken install?)",
                            f"reinstall busi-lite, or {HOW_TO_GET}")
    src = "the backbone given" if r.source == "option" else f"${ENV_BACKBONE}"
    raise BackboneError(f"{r.path} (from {src}): file not found", HOW_TO_GET, param="backbone")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Backbone:
    """Frozen feature extractor: ``features(x [N,S,S,3]) -> [N,G,G,D] float32`` (``self.spec``).

    Uses an onnxruntime CPU session on all cores; checks the file against its spec: ``spec``
    given, else the registered spec of the file's SHA-256, else features.spec.DEFAULT.
    ``registered``: the file is the one its spec pins (same SHA-256).
    """

    def __init__(self, path=None, threads: int | None = None, spec: BackboneSpec | None = None):
        import onnxruntime as ort

        self.path = resolve_path(path)
        self.sha256 = file_sha256(self.path)
        self.spec = spec if spec is not None else spec_for_sha(self.sha256)
        self.registered = self.sha256 == self.spec.sha256
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several private exception types
            raise BackboneError(f"{self.path}: onnxruntime cannot load it ({str(e)[:200]})",
                                f"is it a complete .onnx file? {how_to_get(self.spec)}") from e
        self._check_contract()

    def _check_contract(self) -> None:
        ins, outs, s = self.session.get_inputs(), self.session.get_outputs(), self.spec
        g, d, size = s.grid, s.n_features, s.input_size
        problems = []
        if len(ins) != 1 or ins[0].name != s.input_name:
            problems.append(f"inputs are {[i.name for i in ins]}, expected one named {s.input_name!r}")
        elif not _shape_ok(ins[0].shape, (size, size, 3)):
            problems.append(f"input shape is {ins[0].shape}, expected [N,{size},{size},3] (NHWC)")
        elif isinstance(ins[0].shape[0], int):
            problems.append(f"input batch dimension is fixed to {ins[0].shape[0]}, expected a dynamic batch N")
        if len(outs) < 1 or outs[0].name != s.output_name:
            problems.append(f"outputs are {[o.name for o in outs]}, expected {s.output_name!r}")
        elif not _shape_ok(outs[0].shape, (g, g, d)):
            problems.append(f"output shape is {outs[0].shape}, expected [N,{g},{g},{d}]")
        if problems:
            raise BackboneError(f"{self.path}: model does not fit busi-lite's backbone {s.name!r}: "
                                + "; ".join(problems), how_to_get(s))

    def features(self, x: np.ndarray) -> np.ndarray:
        """x float32 [N,S,S,3] in [-1,1] -> features float32 [N,G,G,D] (S, G, D of ``self.spec``)."""
        s = self.spec
        out = self.session.run([s.output_name], {s.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        if out.shape[1:] != tuple(s.feature_shape):
            raise BackboneError(f"{self.path}: produced {out.shape}, expected [N,{s.grid},{s.grid},{s.n_features}]",
                                how_to_get(s))
        return out


def _shape_ok(shape, tail) -> bool:
    return len(shape) == 4 and all(not isinstance(d, int) or d == t for d, t in zip(shape[1:], tail))
