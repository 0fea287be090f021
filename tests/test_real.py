"""Tests on the real assets: BUSI ($BUSI_LITE_DATA) and the MobileNetV2 backbone ($BUSI_LITE_BACKBONE).

Skipped when the assets are absent (failed with BUSI_LITE_REQUIRE_REAL=1).
The real dataset is extracted once per session into a temporary cache.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from busi_lite.common.constants import CLASSES
from busi_lite.features import cache as F
from busi_lite.io import data as D

EXPECTED = {"normal": 133, "benign": 437, "malignant": 210}
BYTE_DUPLICATE = ("benign/benign (433).png", "malignant/malignant (145).png")


def _quiet(msg):
    pass


# real_cache (conftest.py): BUSI extracted once per session with REAL_VIEWS, shared with test_predict.
from conftest import REAL_VIEWS  # noqa: E402


@pytest.fixture(scope="session")
def real_rerun(real_cache, real_data, real_backbone):
    out, _ = real_cache
    with h5py.File(out, "r") as f:
        before = {k: f[k][:] for k in ("features/raw", "pooled/raw", "pooled/roi", "grid/raw",
                                        "valid/masked", "index/group", "index/phash", "mask224")}
        before["index/path"] = list(f["index/path"].asstr()[:])
    summary = F.extract(real_data, out, backbone=real_backbone, views=REAL_VIEWS, progress=False, log=_quiet)
    return before, summary


def test_real_discovery(real_data):
    ds = D.discover(real_data)
    assert ds.counts() == EXPECTED
    assert not [p for p in ds.problems if p.fatal]
    ds.check()
    # natural order within each class
    benign = [s.path for s in ds.samples if s.label == 1]
    assert benign[:3] == ["benign/benign (1).png", "benign/benign (2).png", "benign/benign (3).png"]
    assert sum(max(0, len(s.mask_paths) - 1) for s in ds.samples) == 18  # extra masks (SOURCE.md)


def test_real_extract_counts_and_masks(real_cache):
    out, summary = real_cache
    assert summary["images"] == 780 and summary["extracted"] == 780
    assert summary["counts"] == EXPECTED
    assert summary["problems"] == []
    cache = F.FeatureCache(out)
    assert len(cache) == 780
    counts = {c: int((cache.labels == i).sum()) for i, c in enumerate(CLASSES)}
    assert counts == EXPECTED
    normal = cache.labels == 0
    assert cache.has_mask[~normal].all(), "every benign and malignant image has a lesion mask"
    assert not cache.has_mask[normal].any(), "normal images have no lesion"
    for v in ("roi", "masked", "mask"):
        np.testing.assert_array_equal(cache.valid(v), cache.has_mask)


def test_real_features_finite(real_cache):
    out, _ = real_cache
    cache = F.FeatureCache(out)
    for v in cache.views:
        p = cache.pooled(v)
        assert p.shape == (780, 1280)
        assert np.isfinite(p).all(), v
        assert (p >= 0).all()  # out_relu features
    sp = cache.spatial("raw")
    assert np.isfinite(sp.astype(np.float32)).all()
    assert sp.reshape(780, -1).max(axis=1).min() > 0
    g = cache.grid("raw")
    assert g.min() >= 0 and g.max() <= 1


def test_real_rerun_reuses_everything(real_cache, real_rerun):
    out, _ = real_cache
    before, summary = real_rerun
    assert summary["extracted"] == 0 and summary["reused"] == 780 and summary["images"] == 780
    with h5py.File(out, "r") as f:
        assert list(f["index/path"].asstr()[:]) == before["index/path"]
        for k, v in before.items():
            if k != "index/path":
                np.testing.assert_array_equal(f[k][:], v, err_msg=k)


def test_real_byte_duplicate_is_a_mixed_group(real_cache):
    out, _ = real_cache
    cache = F.FeatureCache(out)
    a, b = (cache.paths.index(p) for p in BYTE_DUPLICATE)
    assert cache.content_sha256[a] == cache.content_sha256[b]
    assert cache.groups[a] == cache.groups[b]
    mixed = D.mixed_label_groups(cache.groups, cache.labels)
    assert int(cache.groups[a]) in mixed


def test_real_split_seed0(real_cache):
    out, _ = real_cache
    cache = F.FeatureCache(out)
    sp = D.split(cache.labels, cache.groups, cache.paths, seed=0)
    test, train, ex = set(sp.test.tolist()), set(sp.train.tolist()), set(sp.excluded.tolist())
    assert not (test & train) and not (test & ex) and not (train & ex)
    assert test | train | ex == set(range(780))
    assert {cache.paths.index(p) for p in BYTE_DUPLICATE} <= ex
    for c in range(3):
        n = sum(1 for i in range(780) if cache.labels[i] == c and i not in ex)
        n_test = int((cache.labels[sp.test] == c).sum())
        assert abs(n_test / n - 0.15) <= 0.03, (CLASSES[c], n_test, n)
    for g in np.unique(cache.groups):
        idx = set(np.nonzero(cache.groups == g)[0].tolist())
        assert idx <= test or idx <= train or idx <= ex, f"group {g} straddles train and test"
    again = D.split(cache.labels, cache.groups, cache.paths, seed=0)
    assert again.digest(cache.paths) == sp.digest(cache.paths)


def test_real_data_check_cli(real_data):
    from click.testing import CliRunner

    from busi_lite.cli import main

    res = CliRunner().invoke(main, ["data", "check", str(real_data), "--json"])
    assert res.exit_code == 0, res.output
    inv = json.loads(res.stdout if hasattr(res, "stdout") else res.output)
    assert inv["counts"] == EXPECTED
    assert inv["with_lesion_mask"] == {"normal": 0, "benign": 437, "malignant": 210}
    assert not [p for p in inv["problems"] if p["fatal"]]
    assert any(sorted(g) == sorted(BYTE_DUPLICATE) for g in inv["mixed_label_groups"])
