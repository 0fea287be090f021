"""Tests for busi_lite.features.backbone: preprocessing, path resolution, the ONNX contract."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from synth import BAD_VARIANTS, make_tiny_onnx

from busi_lite.common import resources
from busi_lite.features import backbone as B


# --------------------------------------------------------------------------- preprocess
def test_preprocess_shape_dtype_range():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    a[:150] = 0
    a[150:] = 255
    x = B.preprocess(a)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    x = B.preprocess(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0


@pytest.mark.parametrize("value", [0, 1, 100, 127, 200, 255])
def test_preprocess_scaling_exact_on_constant(value):
    x = B.preprocess(np.full((250, 180, 3), value, np.uint8))
    np.testing.assert_array_equal(x, np.full((224, 224, 3), np.float32(value) / np.float32(127.5) - 1,
                                             np.float32))
    assert x.flat[0] == pytest.approx(value / 127.5 - 1, abs=1e-7)


@pytest.mark.parametrize("landscape", [True, False])
def test_preprocess_center_crops(landscape):
    # 400x200: central square is columns 100..300; markers at columns 0..60 / 340..400 are outside
    h, w = (200, 400) if landscape else (400, 200)
    a = np.zeros((h, w, 3), np.uint8)
    out_side = a.copy()
    if landscape:
        out_side[:, :60] = 255
        out_side[:, -60:] = 255
    else:
        out_side[:60] = 255
        out_side[-60:] = 255
    x = B.preprocess(out_side)
    assert (x == -1.0).all(), "markers outside the central square must disappear"
    inside = a.copy()
    inside[h // 2 - 10:h // 2 + 10, w // 2 - 10:w // 2 + 10] = 255  # marker at the centre
    x = B.preprocess(inside)
    assert x.max() == 1.0
    ys, xs = np.nonzero(x[..., 0] > 0)
    # the marker lands in the centre of the 224x224 input
    assert abs(ys.mean() - 111.5) < 2 and abs(xs.mean() - 111.5) < 2


def test_center_box():
    assert B.center_box(400, 200) == (100, 0, 300, 200)
    assert B.center_box(200, 400) == (0, 100, 200, 300)
    assert B.center_box(301, 200) == (50, 0, 250, 200)
    assert B.center_box(224, 224) == (0, 0, 224, 224)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError):
        B.preprocess(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        B.preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        B.preprocess(np.zeros((10, 10, 4), np.uint8))


# --------------------------------------------------------------------------- resolve_path
@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(B.ENV_BACKBONE, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(resources, "packaged_dir", lambda: tmp_path / "pkg")  # the packaged default
    return tmp_path


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_resolve_path_precedence(clean_env, monkeypatch):
    d = clean_env
    _touch(d / B.DEFAULT_BACKBONE)  # in the cwd: never used
    default = _touch(d / "pkg" / B.DEFAULT_BACKBONE)
    env = _touch(d / "env.onnx")
    cli = _touch(d / "cli.onnx")
    assert B.resolve_path() == default
    monkeypatch.setenv(B.ENV_BACKBONE, str(env))
    assert B.resolve_path() == env
    assert B.resolve_path(cli) == cli
    assert B.resolve_path(str(cli)) == cli


def test_resolve_path_missing_explicit_file(clean_env, monkeypatch):
    d = clean_env
    _touch(d / "pkg" / B.DEFAULT_BACKBONE)  # a default exists but must not be used silently
    with pytest.raises(B.BackboneError) as e:
        B.resolve_path(d / "nope.onnx")
    msg = str(e.value)
    # the library names no CLI flag; it names the parameter, and the CLI adds "--backbone"
    assert "nope.onnx" in msg and e.value.param == "backbone" and B.ENV_BACKBONE in msg and "ONNX" in msg
    assert "--backbone" not in msg
    monkeypatch.setenv(B.ENV_BACKBONE, str(d / "missing_env.onnx"))
    with pytest.raises(B.BackboneError) as e:
        B.resolve_path()
    assert "missing_env.onnx" in str(e.value) and f"${B.ENV_BACKBONE}" in str(e.value)


def test_resolve_path_nothing_available(clean_env):
    with pytest.raises(B.BackboneError) as e:
        B.resolve_path()
    msg = str(e.value)
    assert str(B.DEFAULT_BACKBONE) in msg
    assert "MobileNetV2" in msg and "as the backbone" in msg and B.ENV_BACKBONE in msg


# --------------------------------------------------------------------------- Backbone
@pytest.fixture(scope="module")
def bb(tiny_backbone):
    return B.Backbone(tiny_backbone, threads=1)


def test_backbone_features_and_sha(bb, tiny_backbone):
    assert bb.sha256 == hashlib.sha256(tiny_backbone.read_bytes()).hexdigest()
    assert bb.sha256 == B.file_sha256(tiny_backbone)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 224, 224, 3)).astype(np.float32)
    y = bb.features(x)
    assert y.shape == (3, 7, 7, 1280) and y.dtype == np.float32
    assert np.isfinite(y).all() and (y >= 0).all()
    assert not np.allclose(y[0], y[1])


def test_backbone_batch_independence(bb):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (5, 224, 224, 3)).astype(np.float32)
    together = bb.features(x)
    alone = np.concatenate([bb.features(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    # order of the batch does not matter either
    np.testing.assert_allclose(bb.features(x[::-1])[::-1], together, rtol=1e-5, atol=1e-5)


def test_backbone_different_seed_different_sha(tmp_path, bb):
    other = B.Backbone(make_tiny_onnx(tmp_path / "other.onnx", seed=1), threads=1)
    assert other.sha256 != bb.sha256


def test_backbone_via_env(tiny_backbone, monkeypatch):
    monkeypatch.setenv(B.ENV_BACKBONE, str(tiny_backbone))
    assert B.Backbone(threads=1).path == tiny_backbone


_EXPECTED_WORDS = {
    "input_name": ["images", "'input'"],
    "output_name": ["logits", "'features'"],
    "output_shape": ["64", "1280"],
    "input_shape": ["input shape", "NHWC"],
    "static_batch": ["batch"],
    "garbage": ["cannot load"],
}


@pytest.mark.parametrize("bad", BAD_VARIANTS)
def test_contract_violations_raise(tmp_path, bad):
    path = make_tiny_onnx(tmp_path / f"bad_{bad}.onnx", bad=bad)
    with pytest.raises(B.BackboneError) as e:
        B.Backbone(path, threads=1)
    msg = str(e.value)
    assert path.name in msg
    for word in _EXPECTED_WORDS[bad]:
        assert word in msg, f"{bad}: {word!r} not in {msg!r}"
    assert "give its path as the backbone" in msg  # says how to get a fitting model
