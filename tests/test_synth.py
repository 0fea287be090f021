"""Checks for the synthetic test helpers in synth.py and the fixtures in conftest.py."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError
from synth import (
    BAD_VARIANTS,
    CLASSES,
    EXIF_JPEG_DISPLAY_SIZE,
    EXIF_JPEG_MARKER,
    EXIF_JPEG_STORED_SIZE,
    make_busi_tree,
    make_odd_images,
    make_tiny_onnx,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, x):
    return sess.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def _to_input(path):
    """Minimal preprocessing matching the contract: RGB 224x224 NHWC in [-1, 1]."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
        return np.asarray(im, np.float32) / 127.5 - 1.0


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digest(root):
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_sess(tiny_backbone):
    return _session(tiny_backbone)


# --------------------------------------------------------------------------- #
# tiny ONNX backbone
# --------------------------------------------------------------------------- #
def test_tiny_onnx_contract(tiny_backbone, tiny_sess):
    assert tiny_backbone.stat().st_size < 200_000
    onnx.checker.check_model(onnx.load(str(tiny_backbone)))
    (inp,) = tiny_sess.get_inputs()
    (out,) = tiny_sess.get_outputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert out.name == "features" and out.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [224, 224, 3]
    assert isinstance(out.shape[0], str) and out.shape[1:] == [7, 7, 1280]


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_onnx_dynamic_batch_and_range(tiny_sess, batch):
    x = np.random.default_rng(batch).uniform(-1, 1, (batch, 224, 224, 3))
    f = _run(tiny_sess, x)
    assert f.shape == (batch, 7, 7, 1280) and f.dtype == np.float32
    assert np.isfinite(f).all()
    assert f.min() >= 0.0 and f.max() <= 6.0
    assert 0.2 < (f > 0).mean() < 0.95  # ReLU-like: sparse but not dead


def test_tiny_onnx_batch_rows_independent(tiny_sess):
    x = np.random.default_rng(7).uniform(-1, 1, (3, 224, 224, 3))
    fb = _run(tiny_sess, x)
    for i in range(3):
        np.testing.assert_allclose(_run(tiny_sess, x[i:i + 1])[0], fb[i], rtol=1e-5, atol=1e-5)


def test_tiny_onnx_deterministic(tmp_path, tiny_backbone, tiny_sess):
    a = make_tiny_onnx(tmp_path / "a.onnx", seed=0)
    b = make_tiny_onnx(tmp_path / "b.onnx", seed=0)
    c = make_tiny_onnx(tmp_path / "c.onnx", seed=1)
    assert a.read_bytes() == b.read_bytes() == tiny_backbone.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3))
    np.testing.assert_array_equal(_run(tiny_sess, x), _run(tiny_sess, x))
    assert not np.allclose(_run(_session(c), x), _run(tiny_sess, x))


def test_tiny_onnx_content_dependent(tiny_sess):
    rng = np.random.default_rng(0)
    bright = np.full((1, 224, 224, 3), 0.6)
    dark = np.full((1, 224, 224, 3), -0.8)
    textured = np.clip(rng.normal(0, 0.6, (1, 224, 224, 3)), -1, 1)
    feats = [_run(tiny_sess, x)[0].mean((0, 1)) for x in (bright, dark, textured)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(feats[i] - feats[j]).mean() > 0.05

    # different cells of one image give different features
    x = rng.uniform(-1, 1, (1, 224, 224, 3))
    x[:, :112, :112] = -0.9  # dark top-left quadrant
    f = _run(tiny_sess, x)[0].reshape(49, -1)
    d = np.abs(f[:, None] - f[None]).mean(-1)
    off_diag = d[~np.eye(49, dtype=bool)]
    assert off_diag.min() > 0.0


def test_tiny_onnx_spatially_local(tiny_sess):
    """Changing one 32x32 cell changes that cell; cells >= 3 away are untouched.

    (Receptive field: the cell, +1 px of gradient context, +1 cell of 3x3 context.)
    """
    x = np.random.default_rng(3).uniform(-1, 1, (1, 224, 224, 3))
    y = x.copy()
    y[:, 3 * 32:4 * 32, 3 * 32:4 * 32] = 0.9  # centre cell (3, 3)
    fx, fy = _run(tiny_sess, x)[0], _run(tiny_sess, y)[0]
    diff = np.abs(fx - fy).max(-1)
    assert diff[3, 3] > 0.1
    far = np.ones((7, 7), bool)
    far[1:6, 1:6] = False
    assert diff[far].max() == 0.0


@pytest.mark.parametrize("bad", BAD_VARIANTS)
def test_tiny_onnx_bad_variants_violate_contract(tmp_path, bad):
    path = make_tiny_onnx(tmp_path / f"bad_{bad}.onnx", bad=bad)
    assert path.exists() and path.stat().st_size > 0
    if bad == "garbage":
        with pytest.raises(Exception):
            onnx.load(str(path))
        with pytest.raises(Exception):
            _session(path)
        return
    sess = _session(path)  # still a valid model: only the contract is wrong
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    ok = (
        inp.name == "input"
        and out.name == "features"
        and isinstance(inp.shape[0], str)
        and inp.shape[1:] == [224, 224, 3]
        and out.shape[1:] == [7, 7, 1280]
    )
    assert not ok
    if bad == "input_name":
        assert inp.name != "input"
    elif bad == "output_name":
        assert out.name != "features"
    elif bad == "output_shape":
        assert out.shape[1:] == [7, 7, 64]
        f = sess.run(None, {inp.name: np.zeros((2, 224, 224, 3), np.float32)})[0]
        assert f.shape == (2, 7, 7, 64)
    elif bad == "input_shape":
        assert inp.shape[1:] == [3, 224, 224]
        f = sess.run(None, {inp.name: np.zeros((1, 3, 224, 224), np.float32)})[0]
        assert f.shape == (1, 7, 7, 1280)
    elif bad == "static_batch":
        assert inp.shape[0] == 1
        with pytest.raises(Exception):
            sess.run(None, {inp.name: np.zeros((2, 224, 224, 3), np.float32)})


def test_tiny_onnx_rejects_unknown_bad(tmp_path):
    with pytest.raises(ValueError):
        make_tiny_onnx(tmp_path / "x.onnx", bad="nope")


# --------------------------------------------------------------------------- #
# BUSI-like tree
# --------------------------------------------------------------------------- #
def _masks_for(img_path):
    stem = img_path.stem
    return sorted(img_path.parent.glob(f"{stem}_mask*.png"))


def test_busi_tree_counts_and_layout(busi_tree):
    root, info = busi_tree
    assert info["root"] == root
    assert info["counts"] == {"normal": 6, "benign": 11, "malignant": 9}
    assert sorted(p.name for p in root.iterdir()) == sorted(CLASSES)
    for cls in CLASSES:
        imgs = [p for p in (root / cls).glob("*.png") if "_mask" not in p.name]
        assert len(imgs) == info["counts"][cls]
        assert all(p.name.startswith(f"{cls} (") for p in imgs)
        assert sorted(f"{cls}/{p.name}" for p in imgs) == sorted(
            k for k, v in info["images"].items() if v == cls
        )
    assert sum(info["counts"].values()) == len(info["images"])


def test_busi_tree_images_and_masks(busi_tree):
    root, info = busi_tree
    modes = set()
    for rel, cls in info["images"].items():
        img_path = root / rel
        with Image.open(img_path) as im:
            size, mode = im.size, im.mode
        modes.add(mode)
        assert mode in ("L", "RGB")
        assert (mode == "RGB") == (rel in info["rgb"])
        w, h = size
        assert w != h and 180 <= w <= 427 and 200 <= h <= 360
        masks = _masks_for(img_path)
        assert masks and masks[0].name == f"{img_path.stem}_mask.png"
        union = np.zeros((h, w), bool)
        for mp in masks:
            with Image.open(mp) as m:
                assert m.size == size
                if cls == "normal":
                    assert m.mode == "RGB"
                else:
                    assert m.mode in ("1", "L")
                a = np.asarray(m.convert("L"))
            assert set(np.unique(a)) <= {0, 255}
            union |= a > 0
        if cls == "normal":
            assert not union.any()
        else:
            assert 0.005 < union.mean() < 0.5
    assert modes == {"L", "RGB"}


def test_busi_tree_multi_mask(busi_tree):
    root, info = busi_tree
    assert len(info["multi_mask"]) == 2
    for rel in info["multi_mask"]:
        assert rel.startswith("benign/")
        masks = _masks_for(root / rel)
        assert [m.name.split("_", 1)[1] for m in masks] == ["mask.png", "mask_1.png"]
        a, b = (np.asarray(Image.open(m).convert("L")) > 0 for m in masks)
        assert a.any() and b.any() and not (a & b).any()  # two separate lesions


def test_busi_tree_duplicates(busi_tree):
    root, info = busi_tree
    a, b = info["cross_label_duplicate"]
    assert a.split("/")[0] != b.split("/")[0]
    assert (root / a).read_bytes() == (root / b).read_bytes()
    ma, mb = (root / a).with_name((root / a).stem + "_mask.png"), (root / b).with_name(
        (root / b).stem + "_mask.png")
    assert ma.read_bytes() == mb.read_bytes()

    a, b = info["near_duplicate"]
    assert a.startswith("benign/") and b.startswith("benign/")
    assert (root / a).read_bytes() != (root / b).read_bytes()
    x = np.asarray(Image.open(root / a).convert("L"), np.int16)
    y = np.asarray(Image.open(root / b).convert("L"), np.int16)
    assert x.shape == y.shape
    aligned = y[3:, 3:] - x[:-3, :-3]
    assert np.abs(aligned - 5).max() <= 5  # shift 3 px + brightness 5 (clipped at 255)
    assert np.abs(y - x).mean() > 1.0  # not identical without alignment


def test_busi_tree_deterministic(tmp_path):
    i1 = make_busi_tree(tmp_path / "a", n_per_class=(2, 3, 2), seed=5)
    i2 = make_busi_tree(tmp_path / "b", n_per_class=(2, 3, 2), seed=5)
    i3 = make_busi_tree(tmp_path / "c", n_per_class=(2, 3, 2), seed=6)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    for k in ("counts", "cross_label_duplicate", "near_duplicate", "multi_mask", "images"):
        assert i1[k] == i2[k]


def test_busi_tree_without_extras(tmp_path):
    info = make_busi_tree(tmp_path, n_per_class=(1, 2, 1), extras=False)
    assert info["counts"] == {"normal": 1, "benign": 2, "malignant": 1}
    assert info["cross_label_duplicate"] is None and info["near_duplicate"] is None
    digests = [_sha(tmp_path / r) for r in info["images"]]
    assert len(set(digests)) == len(digests)


def test_busi_tree_learnable_on_tiny_features(tmp_path, tiny_sess):
    """GAP features of the tiny backbone separate the synthetic classes (LOO ridge)."""
    info = make_busi_tree(tmp_path, n_per_class=(10, 14, 12), seed=1, extras=False)
    rels = sorted(info["images"])
    x = np.stack([_to_input(tmp_path / r) for r in rels])
    y = np.array([CLASSES.index(info["images"][r]) for r in rels])
    feats = _run(tiny_sess, x).mean(axis=(1, 2))
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    onehot = np.eye(3)[y]
    correct = 0
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        a = np.c_[feats[m], np.ones(m.sum())]
        # ridge regression in dual form (n << d): w = A^T (A A^T + lam I)^-1 Y
        w = a.T @ np.linalg.solve(a @ a.T + 10.0 * np.eye(len(a)), onehot[m])
        correct += int(np.argmax(np.r_[feats[i], 1.0] @ w) == y[i])
    acc = correct / len(y)
    assert acc >= 0.8, f"leave-one-out accuracy {acc:.2f}"


# --------------------------------------------------------------------------- #
# odd images
# --------------------------------------------------------------------------- #
EXPECTED_MODES = {
    "gray16_png": ("PNG", "I;16"),
    "rgba_png": ("PNG", "RGBA"),
    "palette_png": ("PNG", "P"),
    "la_png": ("PNG", "LA"),
    "exif_rot6_jpg": ("JPEG", "RGB"),
    "bmp": ("BMP", "RGB"),
    "tiff": ("TIFF", "L"),
}


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_images(tmp_path_factory.mktemp("odd"))


def test_odd_images_keys(odd):
    assert set(odd) == set(EXPECTED_MODES) | {"truncated_png", "text_as_png", "empty_png"}
    assert all(p.exists() for p in odd.values())


@pytest.mark.parametrize("key", sorted(EXPECTED_MODES))
def test_odd_images_decodable(odd, key):
    fmt, mode = EXPECTED_MODES[key]
    with Image.open(odd[key]) as im:
        im.load()
        assert (im.format, im.mode) == (fmt, mode)
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.ndim == 3 and rgb.shape[2] == 3


def test_odd_gray16_uses_16_bits(odd):
    a = np.asarray(Image.open(odd["gray16_png"]))
    assert a.dtype == np.uint16 and a.max() > 60000 and a.min() == 0


def test_odd_rgba_and_la_have_transparency(odd):
    assert (np.asarray(Image.open(odd["rgba_png"]))[..., 3] == 0).any()
    assert (np.asarray(Image.open(odd["la_png"]))[..., 1] == 0).any()


def test_odd_exif_rotation(odd):
    with Image.open(odd["exif_rot6_jpg"]) as im:
        assert im.size == EXIF_JPEG_STORED_SIZE
        assert im.getexif().get(0x0112) == 6
        raw = np.asarray(im.convert("L"))
        shown = np.asarray(ImageOps.exif_transpose(im).convert("L"))
    m = EXIF_JPEG_MARKER
    assert raw[: m // 2, : m // 2].mean() > 200 and raw[: m // 2, -m // 2:].mean() < 100
    assert shown.shape[::-1] == EXIF_JPEG_DISPLAY_SIZE
    assert shown[: m // 2, -m // 2:].mean() > 200  # marker now top-right
    assert shown[: m // 2, : m // 2].mean() < 100
    assert shown[-m // 2:, -m // 2:].mean() < 100


def test_odd_broken_files(odd):
    with Image.open(odd["truncated_png"]) as im:  # header parses ...
        assert im.format == "PNG"
        with pytest.raises(OSError):  # ... pixel data does not
            im.load()
    for key in ("text_as_png", "empty_png"):
        assert odd[key].suffix == ".png"
        with pytest.raises(UnidentifiedImageError):
            Image.open(odd[key])
    assert odd["empty_png"].stat().st_size == 0


# --------------------------------------------------------------------------- #
# real-asset fixtures: skip vs. fail
# --------------------------------------------------------------------------- #
def test_real_fixture_helpers_skip_or_fail(monkeypatch, tmp_path):
    import conftest

    monkeypatch.delenv("BUSI_LITE_DATA", raising=False)
    monkeypatch.delenv("BUSI_LITE_REQUIRE_REAL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="BUSI_LITE_DATA"):
        conftest._env_path("BUSI_LITE_DATA", "data")
    monkeypatch.setenv("BUSI_LITE_DATA", str(tmp_path / "missing"))
    with pytest.raises(pytest.skip.Exception, match="BUSI_LITE_DATA"):
        conftest._env_path("BUSI_LITE_DATA", "data")
    monkeypatch.setenv("BUSI_LITE_REQUIRE_REAL", "1")
    with pytest.raises(pytest.fail.Exception, match="BUSI_LITE_DATA"):
        conftest._env_path("BUSI_LITE_DATA", "data")
    monkeypatch.setenv("BUSI_LITE_DATA", str(tmp_path))
    assert conftest._env_path("BUSI_LITE_DATA", "data") == tmp_path
