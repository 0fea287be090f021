"""Named preprocessings: v1 equals the backbone's, v2's contrast stretch, lesion-box crops, mirror."""

import numpy as np
import pytest

from busi_lite.common.errors import ConfigError
from busi_lite.features.backbone import preprocess as backbone_preprocess
from busi_lite.features.preprocess import (
    V1,
    V2,
    Preprocessing,
    check_box,
    jitter_box,
    margin_box,
    mask_box,
    mirror,
)


def _img(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_v1_is_the_backbone_preprocessing_bit_for_bit():
    rgb = _img()
    assert np.array_equal(Preprocessing(V1)(rgb), backbone_preprocess(rgb))
    assert Preprocessing.named("v1") == Preprocessing(V1)


def test_v2_removes_gain_and_offset_and_is_grey():
    rgb = (np.random.default_rng(1).random((256, 256, 3)) * 100 + 20).astype(np.uint8)
    dim = (rgb.astype(np.float32) * 0.5 + 3).astype(np.uint8)   # another scanner's gain / offset
    a, b = Preprocessing(V2)(rgb), Preprocessing(V2)(dim)
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    assert a.min() == -1.0 and a.max() == 1.0                   # stretched to the full range
    assert np.abs(a - b).mean() < 0.05                          # contrast change almost gone
    v1a, v1b = Preprocessing(V1)(rgb), Preprocessing(V1)(dim)
    assert np.abs(v1a - v1b).mean() > 0.2                       # v1 keeps it


def test_v2_constant_image_does_not_divide_by_zero():
    x = Preprocessing(V2)(np.full((50, 60, 3), 128, np.uint8))
    assert np.isfinite(x).all()


def test_box_crop_is_the_box_plus_margin_resized():
    rgb = np.zeros((200, 300, 3), np.uint8)
    rgb[50:150, 100:200] = 255                                  # the "lesion"
    assert margin_box((100, 50, 200, 150), 300, 200) == (70, 20, 230, 180)
    x = Preprocessing(V1)(rgb, box=(100, 50, 200, 150))
    bright = x.mean(axis=2) > 0
    # box + 30 % margin: the lesion fills the middle 100/160 of the crop on both axes
    frac = bright.mean(axis=0).max(), bright.mean(axis=1).max()
    assert abs(frac[0] - 100 / 160) < 0.03 and abs(frac[1] - 100 / 160) < 0.03


def test_box_validation_names_the_parameter():
    with pytest.raises(ConfigError) as e:
        check_box((10, 10, 5, 20), 100, 100)
    assert e.value.param == "box"
    with pytest.raises(ConfigError):
        check_box(("a", 1, 2, 3), 100, 100)
    with pytest.raises(ConfigError):
        check_box((200, 200, 300, 300), 100, 100)
    assert check_box((-5, -5, 50.5, 60), 100, 100) == (0, 0, 51, 60)


def test_jitter_stays_near_the_box_and_is_seeded():
    box = (100, 100, 200, 160)
    a = [jitter_box(box, 400, 300, np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    for s in range(50):
        x0, y0, x1, y1 = jitter_box(box, 400, 300, np.random.default_rng(s), amount=0.2)
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
        assert abs((x0 + x1) / 2 - 150) <= 0.2 * 100 + 1 and 0.8 * 100 - 2 <= x1 - x0 <= 1.2 * 100 + 2


def test_mask_box_and_mirror():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_box(m) == (3, 2, 9, 5)
    assert mask_box(np.zeros((4, 4), bool)) is None
    x = Preprocessing(V1)(_img(seed=2))
    assert np.array_equal(mirror(mirror(x)), x)
    assert np.array_equal(mirror(x)[:, 0], x[:, -1])


def test_unknown_preprocessing_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        Preprocessing.named("v9")
    assert e.value.param == "preprocess"
