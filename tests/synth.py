"""Synthetic stand-ins for the real assets, so the suite runs without them.

* :func:`make_tiny_onnx` - a small deterministic ONNX model with the same I/O
  contract as the frozen MobileNetV2 backbone (``input`` [N,224,224,3] NHWC
  float32 in [-1, 1] -> ``features`` [N,7,7,1280] NHWC float32, >= 0).
* :func:`make_busi_tree` - a BUSI-like folder tree (images + masks) with known
  duplicates and multi-mask cases.
* :func:`make_odd_images` - image files in awkward modes / broken files for
  preprocessing tests.

Everything is deterministic for a given seed and uses only numpy, Pillow and
onnx (no network, no real data).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("normal", "benign", "malignant")

# Contract of the real backbone (mirrored by make_tiny_onnx).
INPUT_NAME = "input"
OUTPUT_NAME = "features"
INPUT_SIZE = 224
GRID = 7
FEATURE_DIM = 1280
PNG = {"compress_level": 1}   # the tree's PNGs: same pixels as the default level, written ~2x faster

BAD_VARIANTS = (
    "input_name",     # input is called "images" instead of "input"
    "output_name",    # output is called "logits" instead of "features"
    "output_shape",   # output is [N,7,7,64]
    "input_shape",    # input is NCHW [N,3,224,224]
    "static_batch",   # batch dim fixed to 1 instead of dynamic "N"
    "garbage",        # the file is not ONNX at all
)


# --------------------------------------------------------------------------- #
# Tiny ONNX backbone
# --------------------------------------------------------------------------- #
def _tensor(name, arr):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)


def make_tiny_onnx(path, *, seed=0, out_channels=FEATURE_DIM, bad=None, input_size=INPUT_SIZE) -> Path:
    """Write a tiny MobileNetV2 look-alike to ``path`` and return it as a Path.

    Graph (opset 13, IR 7)::

        input [N,224,224,3] --Transpose--> x [N,3,224,224]
        per 32x32 cell (7x7 grid):  mean(x), mean(x^2), max(x), min(x),
                                    mean(|d/dx gray|), mean(|d/dy gray|)   -> 14 ch
        3x3 Conv(pad 1) 14->10 + Relu (neighbourhood context)              -> 10 ch
        concat -> 24 ch -> 1x1 Conv to ``out_channels`` (fixed random weights
        from ``np.random.default_rng(seed)``) -> Clip(0, 6) -> Transpose
        -> features [N,7,7,out_channels]

    So bright / dark / textured / edge-rich cells give different, non-negative
    features, and each cell depends on its own content plus a small
    neighbourhood (cells up to 2 away; cells >= 3 away have no influence).
    File size is ~130 KB for 1280 channels.

    ``bad`` builds a model that violates the contract (see ``BAD_VARIANTS``):
    ``"input_name"``, ``"output_name"``, ``"output_shape"`` ([N,7,7,64]),
    ``"input_shape"`` (NCHW input [N,3,224,224]), ``"static_batch"`` (batch
    fixed to 1), ``"garbage"`` (non-ONNX bytes).

    ``input_size``: another square input side (a multiple of 32) makes another backbone
    geometry: input [N,S,S,3], features [N,S/32,S/32,out_channels].
    """
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bad is not None and bad not in BAD_VARIANTS:
        raise ValueError(f"unknown bad variant {bad!r}; choose from {BAD_VARIANTS}")

    if bad == "garbage":
        path.write_bytes(b"this is not an ONNX model\x00\xff\xfe" + bytes(range(256)) * 4)
        return path

    in_name = "images" if bad == "input_name" else INPUT_NAME
    out_name = "logits" if bad == "output_name" else OUTPUT_NAME
    if bad == "output_shape":
        out_channels = 64
    batch = 1 if bad == "static_batch" else "N"
    nchw_input = bad == "input_shape"

    rng = np.random.default_rng(seed)
    n_base, n_ctx = 14, 10
    n_mid = n_base + n_ctx

    # Fixed gradient kernels on the channel-mean image.
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8.0
    grad_w = np.stack([kx[None], kx.T[None]])   # [2 out, 1 in, 3, 3] on the channel mean
    # Scales that bring the pooled statistics to comparable O(1) ranges.
    base_scale = np.array([1.5] * 3 + [2.0] * 3 + [1.0] * 3 + [1.0] * 3 + [12.0] * 2,
                          np.float32).reshape(1, n_base, 1, 1)
    base_shift = np.array([0.0] * 3 + [-0.5] * 3 + [-0.5] * 3 + [0.5] * 3 + [-0.5] * 2,
                          np.float32).reshape(1, n_base, 1, 1)
    ctx_w = (rng.standard_normal((n_ctx, n_base, 3, 3)) / np.sqrt(n_base * 9)).astype(np.float32)
    ctx_b = (0.1 * rng.standard_normal(n_ctx)).astype(np.float32)
    proj_w = (rng.standard_normal((out_channels, n_mid, 1, 1)) * (2.0 / np.sqrt(n_mid))).astype(np.float32)
    proj_b = (0.5 + 0.5 * rng.standard_normal(out_channels)).astype(np.float32)

    pool = dict(kernel_shape=[32, 32], strides=[32, 32])
    nodes = []
    if nchw_input:
        nodes.append(helper.make_node("Identity", [in_name], ["x"]))
    else:
        nodes.append(helper.make_node("Transpose", [in_name], ["x"], perm=[0, 3, 1, 2]))
    nodes += [
        helper.make_node("AveragePool", ["x"], ["p_mean"], **pool),
        helper.make_node("Mul", ["x", "x"], ["x_sq"]),
        helper.make_node("AveragePool", ["x_sq"], ["p_sq"], **pool),
        helper.make_node("MaxPool", ["x"], ["p_max"], **pool),
        helper.make_node("Neg", ["x"], ["x_neg"]),
        helper.make_node("MaxPool", ["x_neg"], ["p_negmax"], **pool),
        helper.make_node("ReduceMean", ["x"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("Conv", ["gray", "grad_w"], ["g"], pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["g"], ["g_abs"]),
        helper.make_node("AveragePool", ["g_abs"], ["p_grad"], **pool),
        helper.make_node("Concat", ["p_mean", "p_sq", "p_max", "p_negmax", "p_grad"],
                         ["base_raw"], axis=1),
        helper.make_node("Mul", ["base_raw", "base_scale"], ["base_scaled"]),
        helper.make_node("Add", ["base_scaled", "base_shift"], ["base"]),
        helper.make_node("Conv", ["base", "ctx_w", "ctx_b"], ["ctx_lin"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ctx_lin"], ["ctx"]),
        helper.make_node("Concat", ["base", "ctx"], ["mid"], axis=1),
        helper.make_node("Conv", ["mid", "proj_w", "proj_b"], ["proj"]),
        helper.make_node("Clip", ["proj", "clip_lo", "clip_hi"], ["act"]),
        helper.make_node("Transpose", ["act"], [out_name], perm=[0, 2, 3, 1]),
    ]
    inits = [
        _tensor("grad_w", grad_w),
        _tensor("base_scale", base_scale),
        _tensor("base_shift", base_shift),
        _tensor("ctx_w", ctx_w),
        _tensor("ctx_b", ctx_b),
        _tensor("proj_w", proj_w),
        _tensor("proj_b", proj_b),
        _tensor("clip_lo", np.array(0.0, np.float32)),
        _tensor("clip_hi", np.array(6.0, np.float32)),
    ]
    in_shape = [batch, 3, input_size, input_size] if nchw_input else [batch, input_size, input_size, 3]
    grid = input_size // 32
    graph = helper.make_graph(
        nodes,
        "tiny_mobilenetv2_standin",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, grid, grid, out_channels])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="busi_lite.tests.synth",
        doc_string=f"tiny synthetic backbone seed={seed} bad={bad}",
    )
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


# --------------------------------------------------------------------------- #
# BUSI-like tree
# --------------------------------------------------------------------------- #
def _rng_for(seed, *key):
    return np.random.default_rng([int(seed)] + [int(k) for k in key])


def _box_blur(a, r):
    """Separable box blur with edge padding (r = radius in px)."""
    if r <= 0:
        return a
    k = 2 * r + 1
    p = np.pad(a, r, mode="edge")
    c = np.cumsum(np.pad(p, ((1, 0), (0, 0))), axis=0)
    p = (c[k:] - c[:-k]) / k
    c = np.cumsum(np.pad(p, ((0, 0), (1, 0))), axis=1)
    return (c[:, k:] - c[:, :-k]) / k


def _speckle(rng, h, w):
    """Ultrasound-ish background: smoothed Rayleigh speckle, depth attenuation, float 0..255."""
    base = rng.uniform(95, 125)
    noise = rng.rayleigh(1.0, size=(h, w))
    noise = 0.6 * _box_blur(noise, 1) + 0.4 * noise
    noise = noise / noise.mean()
    yy = np.linspace(0, 1, h)[:, None]
    depth = 1.0 - rng.uniform(0.15, 0.35) * yy  # darker with depth
    # A brighter superficial tissue band near the top.
    band = 1.0 + 0.25 * np.exp(-((yy - rng.uniform(0.08, 0.2)) / 0.06) ** 2)
    img = base * depth * band * (0.55 + 0.45 * noise)
    return img


def _ellipse_field(h, w, cy, cx, ry, rx, angle):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ca, sa = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    return np.sqrt(u * u + v * v)  # < 1 inside


def _irregular_field(rng, h, w, cy, cx, r):
    """Radial distance normalised by an angle-dependent, spiculated radius."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    rad = np.ones_like(theta)
    for k in (2, 3, 5):
        rad += rng.uniform(0.06, 0.16) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    n_spikes = int(rng.integers(7, 12))
    spikes = np.abs(np.cos(n_spikes / 2 * theta + rng.uniform(0, np.pi))) ** 12
    rad += 0.45 * spikes
    return np.sqrt(dx * dx + dy * dy) / (r * rad)


def _draw_benign(rng, img, h, w, center=None, scale=1.0):
    cy, cx = center if center else (rng.uniform(0.35, 0.6) * h, rng.uniform(0.3, 0.7) * w)
    rx = rng.uniform(0.14, 0.22) * w * scale
    ry = rx * rng.uniform(0.5, 0.75)  # wider than tall, circumscribed
    d = _ellipse_field(h, w, cy, cx, ry, rx, rng.uniform(-0.3, 0.3))
    inside = d < 1.0
    soft = np.clip((1.15 - d) / 0.15, 0, 1)  # smooth edge
    lesion_val = rng.uniform(18, 32)
    out = img * (1 - soft) + (lesion_val + 3 * rng.standard_normal(img.shape)) * soft
    # mild posterior acoustic enhancement below the lesion
    below = (_ellipse_field(h, w, cy + 1.6 * ry, cx, 1.2 * ry, 0.9 * rx, 0.0) < 1.0) & ~inside
    out[below] *= 1.15
    return out, inside


def _draw_malignant(rng, img, h, w):
    cy, cx = rng.uniform(0.35, 0.55) * h, rng.uniform(0.3, 0.7) * w
    r = rng.uniform(0.09, 0.15) * min(h, w) * 1.3
    d = _irregular_field(rng, h, w, cy, cx, r)
    inside = d < 1.0
    rim = (d >= 0.85) & (d < 1.35)
    out = img.copy()
    # bright, echogenic, spiculated halo
    out[rim] = np.clip(out[rim] * 1.6 + 70, 0, 255)
    # heterogeneous hypoechoic interior with internal echoes
    interior = rng.uniform(25, 45) + 30 * (rng.random(img.shape) ** 3)
    out[inside] = interior[inside]
    # posterior acoustic shadowing
    yy, xx = np.mgrid[0:h, 0:w]
    shadow = (yy > cy + r) & (np.abs(xx - cx) < 0.7 * r)
    out[shadow] *= 0.6
    return out, inside


def _to_image(arr, rgb, rng):
    a = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if not rgb:
        return Image.fromarray(a)
    rgb_a = np.stack([a, a, a], axis=-1)
    # a small coloured annotation cross in a corner, like scanner overlays
    y0, x0 = int(rng.integers(5, 15)), int(rng.integers(5, 15))
    rgb_a[y0:y0 + 7, x0 + 3] = (255, 255, 0)
    rgb_a[y0 + 3, x0:x0 + 7] = (255, 255, 0)
    return Image.fromarray(rgb_a)


def _mask_image(inside, mode):
    m = (inside.astype(np.uint8) * 255)
    im = Image.fromarray(m)
    return im.convert("1") if mode == "1" else im


def make_busi_tree(root, *, n_per_class=(6, 10, 8), seed=0, extras=True) -> dict:
    """Write a BUSI-like tree under ``root`` and describe it.

    Layout: ``<root>/<class>/<class> (<i>).png`` plus ``<class> (<i>)_mask.png``
    for ``class`` in normal/benign/malignant, ``i`` from 1, ``n_per_class`` in
    that order.

    * images: mostly mode "L", every 4th one RGB (gray replicated + a small
      yellow annotation cross); non-square, widths 180-420, heights 200-360;
      speckle background with depth attenuation.
    * normal: no lesion, mask is an all-black **RGB** image (as in real BUSI).
    * benign: smooth, dark, wider-than-tall ellipse with soft edge.
    * malignant: irregular spiculated dark blob with a bright echogenic rim,
      heterogeneous interior and posterior shadowing.
    * lesion masks: mode "L" (0/255), every 3rd one mode "1"; same size as
      the image.
    * multi-mask: up to two benign images get a second lesion whose mask is in
      ``<class> (<i>)_mask_1.png`` (the union of both masks covers both lesions).

    With ``extras=True`` also:

    * cross-label exact duplicate: ``benign (1).png`` (and its mask) copied
      byte-for-byte to ``malignant (<n_malignant+1>).png``;
    * near duplicate: ``benign (2).png`` shifted by 3 px right/down and +5
      brightness, saved as ``benign (<n_benign+1>).png`` (mask shifted too).

    Returns ``{"root": Path, "counts": {class: n_images}, "cross_label_duplicate":
    (relpath_a, relpath_b) | None, "near_duplicate": (relpath_a, relpath_b) | None,
    "multi_mask": [relpath of images with a _mask_1], "rgb": [relpaths],
    "images": {relpath: class}}``; relpaths are POSIX strings relative to
    ``root`` (e.g. ``"benign/benign (1).png"``).
    """
    root = Path(root)
    n_per_class = tuple(int(n) for n in n_per_class)
    if len(n_per_class) != 3 or min(n_per_class) < 0:
        raise ValueError("n_per_class must be three non-negative ints (normal, benign, malignant)")
    if extras and n_per_class[1] < 2:
        raise ValueError("extras=True needs at least 2 benign images")
    n_normal, n_benign, n_malig = n_per_class

    n_multi_candidates = [i for i in (3, 5) if i <= n_benign]
    images, rgb_list, multi = {}, [], []

    def rel(cls, name):
        return f"{cls}/{name}"

    for ci, cls in enumerate(CLASSES):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(1, n_per_class[ci] + 1):
            rng = _rng_for(seed, ci, i)
            w = int(rng.integers(180, 421))
            h = int(rng.integers(200, 361))
            if w == h:
                w += 7
            is_rgb = (i % 4 == 0)
            img = _speckle(rng, h, w)
            masks = []
            if cls == "benign":
                if i in n_multi_candidates:
                    # two smaller lesions side by side
                    img, m0 = _draw_benign(rng, img, h, w, (0.45 * h, 0.28 * w), scale=0.6)
                    img, m1 = _draw_benign(rng, img, h, w, (0.55 * h, 0.72 * w), scale=0.6)
                    masks = [m0, m1]
                else:
                    img, m0 = _draw_benign(rng, img, h, w)
                    masks = [m0]
            elif cls == "malignant":
                img, m0 = _draw_malignant(rng, img, h, w)
                masks = [m0]
            name = f"{cls} ({i})"
            _to_image(img, is_rgb, rng).save(d / f"{name}.png", **PNG)
            if cls == "normal":
                Image.new("RGB", (w, h), (0, 0, 0)).save(d / f"{name}_mask.png", **PNG)
            else:
                mode = "1" if i % 3 == 0 else "L"
                _mask_image(masks[0], mode).save(d / f"{name}_mask.png", **PNG)
                if len(masks) > 1:
                    _mask_image(masks[1], mode).save(d / f"{name}_mask_1.png", **PNG)
                    multi.append(rel(cls, f"{name}.png"))
            images[rel(cls, f"{name}.png")] = cls
            if is_rgb:
                rgb_list.append(rel(cls, f"{name}.png"))

    cross, near = None, None
    if extras:
        # exact byte duplicate filed under two labels
        src = root / "benign" / "benign (1)"
        dst_name = f"malignant ({n_malig + 1})"
        shutil.copyfile(f"{src}.png", root / "malignant" / f"{dst_name}.png")
        shutil.copyfile(f"{src}_mask.png", root / "malignant" / f"{dst_name}_mask.png")
        cross = (rel("benign", "benign (1).png"), rel("malignant", f"{dst_name}.png"))
        images[cross[1]] = "malignant"
        if "benign/benign (1).png" in rgb_list:
            rgb_list.append(cross[1])

        # near duplicate within benign: shift 3 px, +5 brightness
        src = root / "benign" / "benign (2)"
        nd_name = f"benign ({n_benign + 1})"
        with Image.open(f"{src}.png") as im:
            im.load()
            a = np.asarray(im).astype(np.int16)
            mode_rgb = im.mode == "RGB"
        a2 = np.roll(a, shift=(3, 3), axis=(0, 1))
        a2[:3] = a[:3]
        a2[:, :3] = a[:, :3]
        a2 = np.clip(a2 + 5, 0, 255).astype(np.uint8)
        Image.fromarray(a2).save(root / "benign" / f"{nd_name}.png", **PNG)
        with Image.open(f"{src}_mask.png") as m:
            m_mode = m.mode
            ma = np.asarray(m.convert("L"))
        ma2 = np.zeros_like(ma)
        ma2[3:, 3:] = ma[:-3, :-3]
        _mask_image(ma2 > 127, m_mode).save(root / "benign" / f"{nd_name}_mask.png", **PNG)
        near = (rel("benign", "benign (2).png"), rel("benign", f"{nd_name}.png"))
        images[near[1]] = "benign"
        if mode_rgb:
            rgb_list.append(near[1])

    counts = {c: sum(1 for v in images.values() if v == c) for c in CLASSES}
    return {
        "root": root,
        "counts": counts,
        "cross_label_duplicate": cross,
        "near_duplicate": near,
        "multi_mask": multi,
        "rgb": rgb_list,
        "images": images,
    }


# --------------------------------------------------------------------------- #
# Odd image files
# --------------------------------------------------------------------------- #
# The EXIF-rotated JPEG: stored (raw) size and where the white marker is.
EXIF_JPEG_STORED_SIZE = (240, 160)          # (width, height) as stored
EXIF_JPEG_DISPLAY_SIZE = (160, 240)         # after applying Orientation=6
EXIF_JPEG_MARKER = 40                       # marker is a 40x40 white square
# Orientation 6 = rotate 90 degrees clockwise for display: the marker stored in
# the top-left corner ends up in the top-right corner of the displayed image.
EXIF_JPEG_MARKER_STORED_CORNER = "top-left"
EXIF_JPEG_MARKER_DISPLAY_CORNER = "top-right"


def _gradient(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx / max(w - 1, 1)) * 0.6 + (yy / max(h - 1, 1)) * 0.4)


def make_odd_images(dir) -> dict:
    """Write awkward image files into ``dir``; return ``{key: Path}``.

    Keys (all decodable unless noted):

    * ``"gray16_png"``  - 16-bit grayscale PNG, opens as mode "I;16", values
      span ~0..65535 (a naive 8-bit clip would saturate).
    * ``"rgba_png"``    - RGBA with partly transparent pixels.
    * ``"palette_png"`` - mode "P".
    * ``"la_png"``      - mode "LA".
    * ``"exif_rot6_jpg"`` - RGB JPEG stored 240x160 (w x h) with EXIF
      Orientation=6 and a white 40x40 marker in the stored top-left corner on a
      dark background; after ``ImageOps.exif_transpose`` it is 160x240 with the
      marker in the top-right corner (see the ``EXIF_JPEG_*`` constants).
    * ``"bmp"``         - 24-bit RGB BMP.
    * ``"tiff"``        - grayscale ("L") TIFF.
    * ``"truncated_png"`` - first half of a valid PNG: ``Image.open`` succeeds,
      ``.load()`` raises ``OSError``.
    * ``"text_as_png"`` - a text file named ``*.png``: ``Image.open`` raises
      ``PIL.UnidentifiedImageError``.
    * ``"empty_png"``   - a 0-byte ``*.png``: ``Image.open`` raises
      ``PIL.UnidentifiedImageError``.
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    out = {}

    h, w = 210, 300
    g = _gradient(h, w)
    noise = rng.random((h, w))

    a16 = np.clip((g * 0.85 + 0.15 * noise) * 65535, 0, 65535).astype(np.uint16)
    a16[0, 0], a16[-1, -1] = 0, 65535
    p = d / "gray16.png"
    Image.fromarray(a16).save(p)
    out["gray16_png"] = p

    a8 = np.clip((g * 0.8 + 0.2 * noise) * 255, 0, 255).astype(np.uint8)
    rgba = np.stack([a8, a8, a8, np.full_like(a8, 255)], axis=-1)
    rgba[:, : w // 3, 3] = 0          # left third fully transparent
    rgba[:, w // 3: w // 2, 3] = 128  # semi-transparent band
    p = d / "rgba.png"
    Image.fromarray(rgba).save(p)
    out["rgba_png"] = p

    p = d / "palette.png"
    Image.fromarray(np.stack([a8, a8, a8], -1)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                         colors=64).save(p)
    out["palette_png"] = p

    la = np.stack([a8, np.full_like(a8, 255)], axis=-1)
    la[: h // 4, :, 1] = 0
    p = d / "la.png"
    Image.fromarray(la).save(p)
    out["la_png"] = p

    sw, sh = EXIF_JPEG_STORED_SIZE
    jp = np.full((sh, sw, 3), 40, np.uint8)
    m = EXIF_JPEG_MARKER
    jp[:m, :m] = 255
    im = Image.fromarray(jp)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    p = d / "exif_rot6.jpg"
    im.save(p, quality=95, exif=exif.tobytes())
    out["exif_rot6_jpg"] = p

    p = d / "image.bmp"
    Image.fromarray(np.stack([a8, a8[::-1], a8[:, ::-1]], -1)).save(p)
    out["bmp"] = p

    p = d / "image.tiff"
    Image.fromarray(a8).save(p)
    out["tiff"] = p

    buf = io.BytesIO()
    Image.fromarray(np.clip(noise * 255, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    p = d / "truncated.png"
    p.write_bytes(data[: len(data) // 2])
    out["truncated_png"] = p

    p = d / "not_an_image.png"
    p.write_text("this is a text file, not a PNG\n" * 10)
    out["text_as_png"] = p

    p = d / "empty.png"
    p.write_bytes(b"")
    out["empty_png"] = p

    return out
