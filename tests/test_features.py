"""Tests for busi_lite.features.cache: extraction into the HDF5 cache, incremental reuse, safety."""
from __future__ import annotations

import copy
import fcntl
import hashlib
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image
from synth import make_busi_tree, make_tiny_onnx

import busi_lite
from busi_lite.common.errors import ImageError
from busi_lite.features import cache as F
from busi_lite.features import views as V
from busi_lite.features.backbone import Backbone, preprocess
from busi_lite.features.preprocess import (
    V1,
    Preprocessing,
    margin_box,
    mask_box,
    mirror,
)
from busi_lite.features.views import VIEWS
from busi_lite.io import data as D
from busi_lite.io.imread import read_rgb

ALL_VIEWS = ("raw",) + V.ALL_VIEWS
# The `fresh` caches (incremental reuse, force, locks, interruption) hold one view of each kind:
# mask-fused, mirrored input, jittered box. Reuse copies rows view by view with the same code for
# every view, so these stand for all 14 (which the read-only `extracted` cache checks one by one).
FRESH_VIEWS = ("roi", "flip", "box_j0")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extract(root, out, backbone, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda msg: None)
    return F.extract(root, out, backbone=backbone, **kw)


def _read_all(path) -> dict:
    """Every dataset of a cache file as arrays (strings decoded)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj.asstr()[:] if obj.dtype.kind == "O" else obj[:]
        f.visititems(visit)
    return out


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_backbone):
    """Synthetic tree extracted once with all views (read-only for the tests)."""
    base = tmp_path_factory.mktemp("feat")
    root = base / "busi"
    info = make_busi_tree(root, seed=0)
    out = base / "cache.h5"
    summary = _extract(root, out, tiny_backbone)
    return root, info, out, summary


@pytest.fixture(scope="module")
def fresh_master(tmp_path_factory, tiny_backbone):
    """A tree and its FRESH_VIEWS cache, built once per module; `fresh` hands out copies."""
    base = tmp_path_factory.mktemp("fresh_master")
    info = make_busi_tree(base / "busi", seed=0)
    out = base / "cache" / "feat.h5"
    s = _extract(base / "busi", out, tiny_backbone, views=FRESH_VIEWS, batch_size=8)
    assert s["extracted"] == sum(info["counts"].values())
    assert F.FeatureCache(out).views == ("raw",) + FRESH_VIEWS
    return base, info


@pytest.fixture
def fresh(fresh_master, tmp_path):
    """A modifiable tree with a cache already built: (root, info, out). A byte copy of
    ``fresh_master`` (the cache keys rows by relative path and file bytes, so it is the cache
    an extract in this folder would have written)."""
    base, info = fresh_master
    work = tmp_path / "fresh"
    shutil.copytree(base, work)
    info = copy.deepcopy(info)
    info["root"] = work / "busi"
    return work / "busi", info, work / "cache" / "feat.h5"


# --------------------------------------------------------------------------- contents
def test_index_contents(extracted):
    root, info, out, summary = extracted
    n = sum(info["counts"].values())
    assert summary["images"] == n and summary["extracted"] == n and summary["reused"] == 0
    assert summary["counts"] == info["counts"]
    assert summary["problems"] == []
    cache = F.FeatureCache(out)
    assert len(cache) == n
    ds = D.discover(root)
    assert cache.paths == [s.path for s in ds.samples]  # discovery order
    assert [busi_lite.CLASSES[c] for c in cache.labels] == [info["images"][p] for p in cache.paths]
    assert cache.classes == busi_lite.CLASSES
    # has_mask: a non-empty lesion mask; normal images have all-black masks
    exp_mask = [info["images"][p] != "normal" for p in cache.paths]
    assert cache.has_mask.tolist() == exp_mask
    # groups: duplicates share one, distinct images do not
    idx = {p: i for i, p in enumerate(cache.paths)}
    a, b = (idx[p] for p in info["cross_label_duplicate"])
    c, d = (idx[p] for p in info["near_duplicate"])
    g = cache.groups
    assert g[a] == g[b] and g[c] == g[d] and g[a] != g[c]
    assert len(np.unique(g)) == n - 2
    assert D.mixed_label_groups(g, cache.labels) == [int(g[a])]
    assert cache.content_sha256[a] == cache.content_sha256[b]
    with h5py.File(out, "r") as f:
        w, h = f["index/width"][:], f["index/height"][:]
        src = f["index/source_sha256"].asstr()[:]
    for i, p in enumerate(cache.paths):
        with Image.open(root / p) as im:
            assert (w[i], h[i]) == im.size
    assert src[a] != src[b]  # same bytes, but the path is part of the source hash
    assert len(set(src)) == n


def test_attrs(extracted, tiny_backbone):
    _, _, out, _ = extracted
    cache = F.FeatureCache(out)
    assert cache.backbone_sha256 == Backbone(tiny_backbone, threads=1).sha256
    assert cache.attrs["preprocess_version"] == V1  # extract's default
    assert cache.attrs["package_version"] == busi_lite.__version__
    assert cache.views == ALL_VIEWS
    assert cache.attrs["backbone_file"] == tiny_backbone.name


def test_views_valid_only_with_lesion_mask(extracted):
    _, _, out, _ = extracted
    cache = F.FeatureCache(out)
    assert cache.valid("raw").all()
    for v in VIEWS:
        np.testing.assert_array_equal(cache.valid(v), cache.has_mask)
        sp = cache.spatial(v)
        assert not sp[~cache.has_mask].any(), "invalid rows hold zeros"
        assert (np.abs(sp[cache.has_mask]).reshape(cache.has_mask.sum(), -1).max(axis=1) > 0).all()


def test_grid_fractions(extracted):
    _, info, out, _ = extracted
    cache = F.FeatureCache(out)
    m224 = cache.mask224()
    assert m224.shape == (len(cache), 224, 224) and m224.dtype == bool
    assert not m224[~cache.has_mask].any()
    for v in ALL_VIEWS:
        g = cache.grid(v)
        assert g.shape == (len(cache), 49)
        assert g.min() >= 0 and g.max() <= 1
        assert (g[cache.has_mask].sum(axis=1) > 0).all(), v
        assert not g[~cache.has_mask].any()
    # the raw grid is the lesion share of each 32x32 cell of the 224x224 mask
    exp = m224.reshape(-1, 7, 32, 7, 32).mean(axis=(2, 4)).reshape(-1, 49)
    np.testing.assert_allclose(cache.grid("raw"), exp, atol=1e-3)
    assert ((cache.grid("raw") > 0) == (exp > 0)).all()
    # the roi view is centred on a single lesion: its central cell is lesion
    single = [i for i, p in enumerate(cache.paths) if cache.has_mask[i] and p not in info["multi_mask"]]
    assert (cache.grid("roi")[single][:, 24] > 0.5).all()
    # "masked" and "mask" keep the raw geometry: same grid as raw
    np.testing.assert_array_equal(cache.grid("mask"), cache.grid("raw"))
    np.testing.assert_array_equal(cache.grid("masked"), cache.grid("raw"))


def test_grid_fraction_function():
    m = np.zeros((300, 400), bool)  # centre crop is columns 50..350
    m[:150, 50:200] = True           # top-left quarter of the crop
    frac, m224 = F.grid_fraction(m)
    assert frac.shape == (7, 7) and m224.shape == (224, 224)
    assert m224[:112, :112].all() and not m224[112:].any() and not m224[:, 112:].any()
    np.testing.assert_allclose(frac[:3, :3], 1.0)
    np.testing.assert_allclose(frac[4:, :], 0.0)
    np.testing.assert_allclose(frac[3, :3], 0.5)
    m2 = np.zeros((300, 400), bool)
    m2[:, :40] = True  # outside the centre crop
    assert not F.grid_fraction(m2)[0].any()


def test_pooled_is_mean_of_spatial(extracted):
    _, _, out, _ = extracted
    cache = F.FeatureCache(out)
    for v in ALL_VIEWS:
        p = cache.pooled(v)
        s = cache.spatial(v).astype(np.float32)
        assert p.shape == (len(cache), 1280) and p.dtype == np.float32
        assert s.shape == (len(cache), 49, 1280)
        np.testing.assert_allclose(p, s.mean(axis=1), rtol=2e-3, atol=2e-3)
        assert np.isfinite(p).all()


def test_raw_features_match_backbone(extracted, tiny_backbone):
    root, info, out, _ = extracted
    cache = F.FeatureCache(out)
    bb = Backbone(tiny_backbone, threads=1)
    for p in (info["rgb"][0], info["multi_mask"][0], "normal/normal (1).png"):
        i = cache.paths.index(p)
        exp = bb.features(preprocess(read_rgb(root / p))[None])[0]
        got = cache.spatial("raw", [i])[0].astype(np.float32).reshape(7, 7, 1280)
        np.testing.assert_allclose(got, exp, rtol=2e-3, atol=2e-3)
    # distinct images give distinct features
    sp = cache.pooled("raw")
    assert not np.allclose(sp[0], sp[1])


def test_rows_selection(extracted):
    _, _, out, _ = extracted
    cache = F.FeatureCache(out)
    rows = [3, 0, 5]
    np.testing.assert_array_equal(cache.pooled("raw", rows), cache.pooled("raw")[rows])
    np.testing.assert_array_equal(cache.spatial("roi", rows), cache.spatial("roi")[rows])
    with pytest.raises(F.CacheError, match="nope"):
        cache.pooled("nope")


# --------------------------------------------------------------------------- incremental
def test_rerun_extracts_nothing_and_is_identical(fresh, tiny_backbone):
    root, info, out = fresh
    before = _read_all(out)
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS, batch_size=8)
    n = sum(info["counts"].values())
    assert s["extracted"] == 0 and s["reused"] == n and s["images"] == n
    after = _read_all(out)
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_changed_image_reextracts_one(fresh, tiny_backbone):
    root, info, out = fresh
    before = _read_all(out)
    target = "malignant/malignant (5).png"
    with Image.open(root / target) as im:
        a = np.asarray(im).copy()
    a[: a.shape[0] // 2] = 255 - a[: a.shape[0] // 2]
    Image.fromarray(a).save(root / target)
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS, batch_size=8)
    assert s["extracted"] == 1 and s["reused"] == sum(info["counts"].values()) - 1
    after = _read_all(out)
    paths = list(after["index/path"])
    i = paths.index(target)
    others = [j for j in range(len(paths)) if j != i]
    for v in ("raw",) + FRESH_VIEWS:
        np.testing.assert_array_equal(after[f"features/{v}"][others], before[f"features/{v}"][others])
        np.testing.assert_array_equal(after[f"pooled/{v}"][others], before[f"pooled/{v}"][others])
    assert not np.array_equal(after["features/raw"][i], before["features/raw"][i])
    assert after["index/source_sha256"][i] != before["index/source_sha256"][i]


def test_changed_mask_reextracts_one(fresh, tiny_backbone):
    root, _, out = fresh
    mpath = root / "benign" / "benign (7)_mask.png"
    with Image.open(mpath) as m:
        a = np.asarray(m.convert("L")).copy()
    a[:] = 0
    a[10:40, 10:40] = 255
    Image.fromarray(a).save(mpath)
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS, batch_size=8)
    assert s["extracted"] == 1


def test_added_image_extracts_one(fresh, tiny_backbone):
    root, info, out = fresh
    with Image.open(root / "normal" / "normal (1).png") as im:
        a = np.asarray(im)[::-1, ::-1].copy()
    a[:40, :40] = 255
    new = root / "normal" / "normal (99).png"
    Image.fromarray(a).save(new)
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS, batch_size=8)
    n = sum(info["counts"].values())
    assert s["extracted"] == 1 and s["reused"] == n and s["images"] == n + 1
    cache = F.FeatureCache(out)
    assert "normal/normal (99).png" in cache.paths
    assert not cache.has_mask[cache.paths.index("normal/normal (99).png")]


def test_removed_image_drops_row(fresh, tiny_backbone):
    root, info, out = fresh
    (root / "benign" / "benign (8).png").unlink()
    (root / "benign" / "benign (8)_mask.png").unlink()
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS)
    assert s["extracted"] == 0 and s["images"] == sum(info["counts"].values()) - 1
    assert "benign/benign (8).png" not in F.FeatureCache(out).paths


def test_force_redoes_all(fresh, tiny_backbone):
    root, info, out = fresh
    before = _read_all(out)
    s = _extract(root, out, tiny_backbone, views=FRESH_VIEWS, force=True)
    n = sum(info["counts"].values())
    assert s["extracted"] == n and s["reused"] == 0
    after = _read_all(out)
    np.testing.assert_array_equal(after["features/raw"], before["features/raw"])


def test_other_backbone_refused_without_force(fresh, tmp_path):
    root, info, out = fresh
    other = make_tiny_onnx(tmp_path / "other" / "tiny_seed1.onnx", seed=1)
    sha = _sha(out)
    with pytest.raises(F.CacheError) as e:
        _extract(root, out, other, views=FRESH_VIEWS)
    msg = str(e.value)
    assert "backbone" in msg and "extract with force" in msg and "--" not in msg
    assert e.value.param == "force"
    assert _sha(out) == sha
    assert _leftovers(out.parent) == []
    s = _extract(root, out, other, views=FRESH_VIEWS, force=True)
    assert s["extracted"] == sum(info["counts"].values())
    assert F.FeatureCache(out).backbone_sha256 == _sha(other)


def test_other_views_refused_without_force(fresh, tiny_backbone):
    root, _, out = fresh
    sha = _sha(out)
    with pytest.raises(F.CacheError, match="views"):
        _extract(root, out, tiny_backbone, views=("roi",))
    assert _sha(out) == sha


def test_unreadable_cache_refused(busi_tree, tmp_path, tiny_backbone):
    root, _ = busi_tree
    out = tmp_path / "broken.h5"
    out.write_bytes(b"not hdf5")
    with pytest.raises(F.CacheError, match="rebuild the cache"):
        _extract(root, out, tiny_backbone)
    assert out.read_bytes() == b"not hdf5"


def test_bad_image_skipped_or_strict(busi_tree, tmp_path, tiny_backbone):
    root, info = busi_tree
    bad = root / "benign" / "benign (6).png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "c.h5"
    msgs = []
    s = _extract(root, out, tiny_backbone, views=("roi", "flip"), log=msgs.append)  # skipping is view-blind
    n = sum(info["counts"].values())
    assert s["images"] == n - 1 and s["extracted"] == n - 1
    assert any("benign (6).png" in p for p in s["problems"])
    assert any("benign (6).png" in m for m in msgs)
    cache = F.FeatureCache(out)
    assert "benign/benign (6).png" not in cache.paths and len(cache) == n - 1
    out2 = tmp_path / "strict.h5"
    with pytest.raises(ImageError, match=r"benign \(6\)\.png"):
        _extract(root, out2, tiny_backbone, views=("roi", "flip"), strict=True)
    assert not out2.exists()
    assert _leftovers(tmp_path) == []


def test_fatal_dataset_problem_raises(busi_tree, tmp_path, tiny_backbone):
    root, _ = busi_tree
    for f in (root / "normal").iterdir():
        f.unlink()
    with pytest.raises(D.DatasetError):
        _extract(root, tmp_path / "c.h5", tiny_backbone, require=("normal",))
    assert not (tmp_path / "c.h5").exists()
    # not required: a cache of the classes present, which records them
    s = _extract(root, tmp_path / "c.h5", tiny_backbone, views=())
    assert s["classes"] == ["benign", "malignant"] and s["notes"]
    with F.FeatureCache(tmp_path / "c.h5") as cache:
        assert cache.classes == ("benign", "malignant") and set(cache.labels.tolist()) == {0, 1}


def test_interrupted_run_keeps_previous_cache(fresh, tiny_backbone, monkeypatch):
    root, info, out = fresh
    sha = _sha(out)
    real = F._run_backbone
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(F, "_run_backbone", flaky)
    with pytest.raises(KeyboardInterrupt):
        _extract(root, out, tiny_backbone, views=FRESH_VIEWS, force=True, batch_size=8)
    assert len(calls) == 2
    assert _sha(out) == sha
    assert _leftovers(out.parent) == []
    assert len(F.FeatureCache(out)) == sum(info["counts"].values())
    # the lock is released: the next run works and reuses everything
    monkeypatch.setattr(F, "_run_backbone", real)
    assert _extract(root, out, tiny_backbone, views=FRESH_VIEWS)["extracted"] == 0


def test_concurrent_run_refused(fresh, tiny_backbone):
    root, _, out = fresh
    sha = _sha(out)
    lock = out.with_name(out.name + ".lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(F.CacheError, match="another"):
            _extract(root, out, tiny_backbone, views=FRESH_VIEWS, force=True)
        assert _sha(out) == sha
        assert _leftovers(out.parent) == []
        fcntl.flock(f, fcntl.LOCK_UN)
    assert _extract(root, out, tiny_backbone, views=FRESH_VIEWS)["extracted"] == 0


def test_feature_cache_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(F.ENV_CACHE, raising=False)
    missing = tmp_path / "none.h5"
    with pytest.raises(F.CacheError) as e:
        F.FeatureCache(missing)
    assert "extract" in str(e.value) and str(missing) in str(e.value) and "--" not in str(e.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(F.CacheError, match="extract"):
        F.FeatureCache()


def test_feature_cache_incomplete(tmp_path):
    p = tmp_path / "partial.h5"
    with h5py.File(p, "w") as f:
        f.attrs["views"] = "raw"
    with pytest.raises(F.CacheError, match="rebuild the cache"):
        F.FeatureCache(p)


def test_views_selection_raw_only(busi_tree, tmp_path, tiny_backbone):
    root, info = busi_tree
    out = tmp_path / "raw.h5"
    _extract(root, out, tiny_backbone, views=())
    cache = F.FeatureCache(out)
    assert cache.views == ("raw",)
    assert len(cache) == sum(info["counts"].values())
    with h5py.File(out, "r") as f:
        assert set(f["features"]) == {"raw"} and set(f["pooled"]) == {"raw"}
    with pytest.raises(F.CacheError, match="roi"):
        cache.spatial("roi")
    with pytest.raises(ValueError, match="unknown view"):
        _extract(root, tmp_path / "x.h5", tiny_backbone, views=("bogus",))


# --------------------------------------------------------------------------- input views (issue 11)
def test_flip_and_box_views_are_the_named_inputs(extracted, tiny_backbone):
    """flip = backbone(mirror(raw input)) on every image; box = backbone(input of the mask box +
    margin) on lesion images; jittered boxes differ from the true box and from each other."""
    root, info, out, _ = extracted
    cache = F.FeatureCache(out)
    assert cache.valid("flip").all()
    for v in V.BOX_VIEWS:
        np.testing.assert_array_equal(cache.valid(v), cache.has_mask)
    bb = Backbone(tiny_backbone, threads=1)
    pp = Preprocessing.named("v1")
    i = cache.paths.index(info["multi_mask"][0])
    s = D.discover(root).samples[i]
    rgb = read_rgb(root / s.path)
    mask = D.read_mask(root, s, (rgb.shape[1], rgb.shape[0]))
    box = mask_box(mask)

    def feat(x):
        return bb.features(x[None])[0].reshape(49, 1280)

    def got(v):
        return cache.spatial(v, [i])[0].astype(np.float32)

    np.testing.assert_allclose(got("flip"), feat(mirror(pp(rgb))), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(got("box"), feat(pp(rgb, box=box)), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(got("box_flip"), feat(mirror(pp(rgb, box=box))), rtol=2e-3, atol=2e-3)
    j0 = V.view_boxes(box, rgb.shape[1], rgb.shape[0], s.path, ["box_j0"])["box_j0"]
    assert j0 != box
    np.testing.assert_allclose(got("box_j0"), feat(pp(rgb, box=j0)), rtol=2e-3, atol=2e-3)
    pooled = {v: cache.pooled(v, [i])[0] for v in V.BOX_VIEWS}
    for a, b in (("box", "box_j0"), ("box_j0", "box_j1"), ("box_s10", "box_s30"), ("box", "box_flip")):
        assert not np.allclose(pooled[a], pooled[b]), (a, b)
    # grids: flip is the mirrored raw grid; box grids are that view's lesion share
    np.testing.assert_array_equal(cache.grid("flip").reshape(-1, 7, 7), cache.grid("raw").reshape(-1, 7, 7)[:, :, ::-1])
    g = F.grid_fraction(mask, margin_box(box, rgb.shape[1], rgb.shape[0]))[0].reshape(49)
    np.testing.assert_allclose(cache.grid("box", [i])[0], g, atol=1e-3)


def test_box_jitter_is_seeded_by_view_and_path():
    box, w, h = (40, 50, 120, 110), 300, 200
    a = V.view_boxes(box, w, h, "benign/a.png", V.BOX_VIEWS)
    assert a == V.view_boxes(box, w, h, "benign/a.png", V.BOX_VIEWS)  # deterministic
    assert a["box"] == box and set(a) == {"box", "box_j0", "box_j1", "box_s10", "box_s20", "box_s30"}
    assert len({a[k] for k in a}) == len(a)  # every jittered box is its own draw
    assert a != V.view_boxes(box, w, h, "benign/b.png", V.BOX_VIEWS)  # another image, other draws
    # the sloppier the box, the further it moves from the true one (on average over images)
    shift = {k: np.mean([np.abs(np.subtract(V.view_boxes(box, w, h, f"x{n}.png", [k])[k], box)).sum()
                         for n in range(200)]) for k in ("box_s10", "box_s20", "box_s30")}
    assert shift["box_s10"] < shift["box_s20"] < shift["box_s30"]


def test_default_cache_names_do_not_collide():
    assert F.default_cache("v1") == F.DEFAULT_CACHE
    assert F.default_cache("v2") != F.default_cache("v1")
    assert F.default_cache("v2").name == "busi_features_v2.h5"
