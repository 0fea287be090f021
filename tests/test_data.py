"""Tests for busi_lite.io.data: discovery, validation, reading odd images, duplicates, split, folds."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import (
    CLASSES,
    EXIF_JPEG_DISPLAY_SIZE,
    EXIF_JPEG_MARKER,
    EXIF_JPEG_STORED_SIZE,
    make_busi_tree,
    make_odd_images,
)

from busi_lite.common.errors import ImageError
from busi_lite.io import data as D
from busi_lite.io.imread import content_sha256, read_rgb


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A read-only synthetic tree shared by the tests that do not modify it."""
    root = tmp_path_factory.mktemp("tree") / "busi"
    return root, make_busi_tree(root, seed=0)


@pytest.fixture(scope="module")
def inventory(tree):
    root, _ = tree
    ds = D.discover(root)
    return ds, D.inspect(ds)


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_images(tmp_path_factory.mktemp("odd"))


def _hash_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _problems_for(ds_or_list, path):
    probs = ds_or_list.problems if hasattr(ds_or_list, "problems") else ds_or_list
    return [p for p in probs if (p.path if hasattr(p, "path") else p["path"]) == path]


def _groups_from_inventory(ds, inv):
    """Per-sample group ids (index order of ds.samples) from inspect's duplicate_groups."""
    gid = {s.path: i for i, s in enumerate(ds.samples)}
    for members in inv["duplicate_groups"]:
        g = min(gid[m] for m in members)
        for m in members:
            gid[m] = g
    return np.array([gid[s.path] for s in ds.samples])


def _synthetic_split_input(n_groups_per_class=(40, 60, 30), seed=0):
    """labels/groups/paths with singletons, pairs and one mixed-label group."""
    rng = np.random.default_rng(seed)
    labels, groups, paths = [], [], []
    for c, ng in enumerate(n_groups_per_class):
        for g in range(ng):
            size = 1 if rng.random() < 0.8 else 2
            for k in range(size):
                labels.append(c)
                groups.append(f"{c}-{g}")
                paths.append(f"{CLASSES[c]}/{CLASSES[c]} ({g}-{k}).png")
    # a mixed-label group: one benign + one malignant image of the same content
    labels += [1, 2]
    groups += ["mixed", "mixed"]
    paths += ["benign/dup.png", "malignant/dup.png"]
    # integer group ids = index of the first member (what duplicate_groups returns)
    first = {}
    gid = [first.setdefault(g, i) for i, g in enumerate(groups)]
    return np.array(labels), np.array(gid), paths


# --------------------------------------------------------------------------- discovery
def test_discover_counts_masks_and_natural_order(tree):
    root, info = tree
    ds = D.discover(root)
    assert ds.problems == []
    assert ds.counts() == info["counts"]
    assert ds.classes == CLASSES
    assert {s.path for s in ds.samples} == set(info["images"])
    for s in ds.samples:
        assert CLASSES[s.label] == info["images"][s.path]
        stem = s.path[:-len(".png")]
        assert s.mask_paths[0] == f"{stem}_mask.png"
    multi = {s.path: s.mask_paths for s in ds.samples if len(s.mask_paths) > 1}
    assert set(multi) == set(info["multi_mask"]) and multi
    for p, masks in multi.items():
        assert masks == (p[:-4] + "_mask.png", p[:-4] + "_mask_1.png")
    # natural sort: "benign (2)" before "benign (10)" before "benign (11)"
    benign = [s.path for s in ds.samples if s.label == 1]
    nums = [int(p.split("(")[1].split(")")[0]) for p in benign]
    assert nums == sorted(nums) and nums == list(range(1, len(nums) + 1))
    # classes appear in the class order
    assert list(ds.labels) == sorted(ds.labels)


def test_discover_dicom_names_without_decoding(tmp_path):
    """DICOM files are found by name (.dcm) or by the DICM preamble (no pydicom needed here)."""
    d = tmp_path / "benign"
    d.mkdir()
    dicm = b"\0" * 128 + b"DICM" + b"\0" * 64
    (d / "a.dcm").write_bytes(b"anything")                # .dcm: an image by its name
    (d / "a_mask.png").write_bytes(b"")
    (d / "IM_0001").write_bytes(dicm)                      # extensionless, found by its preamble
    (d / "IM_0001_mask.png").write_bytes(b"")
    (d / "1.2.840.5").write_bytes(dicm)                   # UID-named: the whole name is the stem
    (d / "1.2.840.5_mask.png").write_bytes(b"")
    (d / "b.png").write_bytes(b"")
    (d / "b.dcm").write_bytes(dicm)                        # same stem: the PNG is used
    (d / "notes").write_bytes(b"\0" * 128 + b"TEXT")       # no preamble: not an image
    (d / ".hidden").write_bytes(dicm)                      # hidden: skipped silently
    ds = D.discover(tmp_path)
    got = {s.path: s.mask_paths for s in ds.samples}
    assert got == {"benign/1.2.840.5": ("benign/1.2.840.5_mask.png",), "benign/a.dcm": ("benign/a_mask.png",),
                   "benign/b.png": (), "benign/IM_0001": ("benign/IM_0001_mask.png",)}
    assert {p.path: p.what for p in ds.problems} == {
        "benign/b.dcm": "another image with the same name is used (benign/b.png; ignored)",
        "benign/notes": "not an image file (ignored)"}


def test_read_mask_unions_extra_masks(tree):
    root, info = tree
    ds = D.discover(root)
    s = next(s for s in ds.samples if s.path == info["multi_mask"][0])
    rgb = read_rgb(root / s.path)
    size = (rgb.shape[1], rgb.shape[0])
    union = D.read_mask(root, s, size)
    first = D.read_mask(root, D.Sample(s.path, s.label, s.mask_paths[:1]), size)
    second = D.read_mask(root, D.Sample(s.path, s.label, s.mask_paths[1:]), size)
    assert union.dtype == bool and union.shape == rgb.shape[:2]
    assert first.any() and second.any()
    assert (second & ~first).any(), "the second lesion must add pixels"
    np.testing.assert_array_equal(union, first | second)
    # an image without masks -> None
    assert D.read_mask(root, D.Sample(s.path, s.label, ()), size) is None


def test_normal_masks_are_empty(tree):
    root, _ = tree
    ds = D.discover(root)
    for s in ds.samples:
        rgb = read_rgb(root / s.path)
        m = D.read_mask(root, s, (rgb.shape[1], rgb.shape[0]))
        assert m is not None
        assert bool(m.any()) == (s.label != 0), s.path


def test_missing_root_raises(tmp_path):
    with pytest.raises(D.DatasetError, match="not found"):
        D.discover(tmp_path / "nope")


def test_missing_class_folder_is_a_note_unless_required(busi_tree):
    root, info = busi_tree
    shutil.rmtree(root / "malignant")
    ds = D.discover(root)
    assert ds.classes == ("normal", "benign") and ds.problems == []
    assert any("malignant/" in n and "missing" in n for n in ds.notes)
    assert ds.counts() == {"normal": info["counts"]["normal"], "benign": info["counts"]["benign"]}
    ds.check(strict=True)  # a note is not a problem, even when strict
    req = D.discover(root, require=True)
    probs = _problems_for(req, "malignant/")
    assert len(probs) == 1 and probs[0].fatal and "missing" in probs[0].what
    with pytest.raises(D.DatasetError, match="malignant"):
        req.check()
    assert not _problems_for(D.discover(root, require=("benign",)), "malignant/")


def test_subset_of_classes_gets_consecutive_labels(busi_tree):
    """BUS-BRA has benign and malignant only: labels index the present classes."""
    root, info = busi_tree
    shutil.rmtree(root / "normal")
    ds = D.discover(root)
    assert ds.classes == ("benign", "malignant")
    assert set(ds.labels.tolist()) == {0, 1}
    assert ds.counts() == {"benign": info["counts"]["benign"], "malignant": info["counts"]["malignant"]}
    inv = D.inspect(ds)
    assert inv["classes"] == ["benign", "malignant"] and inv["notes"]


def test_empty_class_folder_is_fatal_when_required(busi_tree):
    root, _ = busi_tree
    for f in (root / "normal").iterdir():
        f.unlink()
    ds = D.discover(root)
    assert "normal" not in ds.classes and any("normal/" in n for n in ds.notes)
    ds = D.discover(root, require=("normal",))
    probs = _problems_for(ds, "normal/")
    assert len(probs) == 1 and probs[0].fatal and "no images" in probs[0].what
    with pytest.raises(D.DatasetError, match="normal"):
        ds.check()


def test_no_class_folder_suggests_the_right_folder(busi_tree):
    root, _ = busi_tree
    above = D.discover(root.parent)          # one level above the dataset
    fatal = [p for p in above.problems if p.fatal]
    assert len(fatal) == 1 and f"found class folders in {root}" in fatal[0].fix
    below = D.discover(root / "benign")      # one level below (a class folder)
    fatal = [p for p in below.problems if p.fatal]
    assert len(fatal) == 1 and f"found class folders in {root.resolve()}" in fatal[0].fix
    with pytest.raises(D.DatasetError, match="use that folder"):
        below.check()


def test_non_image_file_is_a_warning(busi_tree):
    root, info = busi_tree
    (root / "benign" / "notes.txt").write_text("hello")
    (root / "benign" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored silently
    ds = D.discover(root)
    probs = _problems_for(ds, "benign/notes.txt")
    assert len(probs) == 1 and not probs[0].fatal and "not an image" in probs[0].what
    assert len(ds.problems) == 1
    assert ds.counts() == info["counts"]
    ds.check()  # not fatal
    with pytest.raises(D.DatasetError, match="notes.txt"):
        ds.check(strict=True)


def test_mask_without_image(busi_tree):
    root, info = busi_tree
    (root / "benign" / "benign (2).png").unlink()
    ds = D.discover(root)
    probs = _problems_for(ds, "benign/benign (2)_mask.png")
    assert len(probs) == 1 and not probs[0].fatal and "without image" in probs[0].what
    assert "benign/benign (2).png" not in [s.path for s in ds.samples]
    assert ds.counts()["benign"] == info["counts"]["benign"] - 1


def test_mask_size_mismatch_raises_naming_file(busi_tree):
    root, _ = busi_tree
    mpath = root / "benign" / "benign (4)_mask.png"
    with Image.open(mpath) as m:
        m.resize((m.width + 10, m.height)).save(mpath)
    ds = D.discover(root)
    s = next(s for s in ds.samples if s.path == "benign/benign (4).png")
    rgb = read_rgb(root / s.path)
    with pytest.raises(ImageError, match=r"benign \(4\)_mask\.png.*re-export"):
        D.read_mask(root, s, (rgb.shape[1], rgb.shape[0]))


def test_non_binary_mask_raises(busi_tree):
    root, _ = busi_tree
    mpath = root / "malignant" / "malignant (2)_mask.png"
    with Image.open(mpath) as m:
        a = np.asarray(m.convert("L")).copy()
    a[a > 0] = 200
    a[0, 0] = 100
    Image.fromarray(a).save(mpath)
    ds = D.discover(root)
    s = next(s for s in ds.samples if s.path == "malignant/malignant (2).png")
    rgb = read_rgb(root / s.path)
    with pytest.raises(ImageError, match=r"malignant \(2\)_mask\.png.*not binary"):
        D.read_mask(root, s, (rgb.shape[1], rgb.shape[0]))


@pytest.mark.parametrize("key", ["truncated_png", "text_as_png", "empty_png"])
def test_broken_images_raise_image_error(odd, key):
    path = odd[key]
    with pytest.raises(ImageError) as e:
        read_rgb(path)
    msg = str(e.value)
    assert path.name in msg
    assert "->" in msg and "re-export" in msg  # says what to do


def test_inspect_lists_problems_and_keeps_going(busi_tree):
    root, info = busi_tree
    # corrupt one image, make one mask non-binary, add a stray file
    (root / "benign" / "benign (6).png").write_bytes(b"garbage, not a png")
    mpath = root / "malignant" / "malignant (3)_mask.png"
    with Image.open(mpath) as m:
        a = np.asarray(m.convert("L")).copy()
    a[a > 0] = 128
    Image.fromarray(a).save(mpath)
    (root / "normal" / "readme.txt").write_text("x")
    ds = D.discover(root)
    inv = D.inspect(ds)
    paths = {p["path"] for p in inv["problems"]}
    assert {"benign/benign (6).png", "malignant/malignant (3).png", "normal/readme.txt"} <= paths
    assert not any(p["fatal"] for p in inv["problems"])
    for p in inv["problems"]:
        assert p["what"] and p["fix"]
    # the two bad images are left out, everything else is counted
    exp = dict(info["counts"])
    exp["benign"] -= 1
    exp["malignant"] -= 1
    assert inv["counts"] == exp


def test_dataset_is_never_modified(busi_tree):
    root, _ = busi_tree
    (root / "benign" / "benign (6).png").write_bytes(b"garbage")
    (root / "normal" / "stray.txt").write_text("x")
    before = _hash_tree(root)
    ds = D.discover(root)
    D.inspect(ds)
    for s in ds.samples:
        try:
            rgb = read_rgb(root / s.path)
            D.read_mask(root, s, (rgb.shape[1], rgb.shape[0]))
        except ImageError:
            pass
    assert _hash_tree(root) == before


def test_inspect_inventory(tree, inventory):
    _, info = tree
    ds, inv = inventory
    assert inv["counts"] == info["counts"]
    assert inv["problems"] == []
    assert inv["with_lesion_mask"] == {"normal": 0, "benign": info["counts"]["benign"],
                                       "malignant": info["counts"]["malignant"]}
    assert inv["extra_masks"] == len(info["multi_mask"])
    assert 180 <= inv["width"][0] <= inv["width"][1] <= inv["width"][2] <= 420


# --------------------------------------------------------------------------- duplicates
def test_duplicate_groups_on_tree(tree, inventory):
    _, info = tree
    ds, inv = inventory
    groups = sorted(sorted(g) for g in inv["duplicate_groups"])
    assert groups == sorted([sorted(info["cross_label_duplicate"]), sorted(info["near_duplicate"])])
    assert inv["mixed_label_groups"] == [list(info["cross_label_duplicate"])]


def test_duplicate_groups_function(tree):
    root, info = tree
    ds = D.discover(root)
    rgbs = [read_rgb(root / s.path) for s in ds.samples]
    hashes = [content_sha256(x) for x in rgbs]
    phs = [D.phash(x) for x in rgbs]
    g = D.duplicate_groups(hashes, phs)
    idx = {s.path: i for i, s in enumerate(ds.samples)}
    a, b = (idx[p] for p in info["cross_label_duplicate"])
    c, d = (idx[p] for p in info["near_duplicate"])
    assert g[a] == g[b] == min(a, b)
    assert g[c] == g[d] == min(c, d)
    assert hashes[c] != hashes[d]  # the near duplicate is found by pHash, not identical pixels
    assert g[a] != g[c]
    others = [i for i in range(len(g)) if i not in (a, b, c, d)]
    assert len(set(g[others])) == len(others), "distinct images must not be grouped"
    mixed = D.mixed_label_groups(g, ds.labels)
    assert mixed == [min(a, b)]


def test_duplicate_groups_transitive_and_hash_equality():
    # equal content hashes group even with far pHashes; pHash chains are transitive
    g = D.duplicate_groups(["x", "y", "x", "z", "w"],
                           [0, (1 << 64) - 1, 0xFFFF_0000_FFFF_0000, 0b111111, 0b111111 << 6])
    assert g[0] == g[2] == 0
    assert g[1] == 1
    # 0 vs 0b111111 -> 6 bits, 0b111111 vs 0b111111<<6 -> 12 bits, 0 vs it -> 6 bits: all one group
    assert g[3] == g[4] == 0


def test_mixed_label_groups():
    groups = np.array([0, 0, 2, 2, 4])
    labels = np.array([1, 2, 1, 1, 0])
    assert D.mixed_label_groups(groups, labels) == [0]


# --------------------------------------------------------------------------- split
def test_split_is_stratified_group_aware_and_excludes_mixed():
    labels, groups, paths = _synthetic_split_input()
    sp = D.split(labels, groups, paths, seed=0)
    test, train, ex = set(sp.test.tolist()), set(sp.train.tolist()), set(sp.excluded.tolist())
    assert not (test & train) and not (test & ex) and not (train & ex)
    assert test | train | ex == set(range(len(labels)))
    mixed_idx = {i for i, p in enumerate(paths) if p.endswith("dup.png")}
    assert ex == mixed_idx
    for c in range(3):
        members = [i for i in np.nonzero(labels == c)[0] if i not in ex]
        n_test = sum(1 for i in members if i in test)
        assert abs(n_test - 0.15 * len(members)) <= 1, (c, n_test, len(members))
    for g in np.unique(groups):
        idx = set(np.nonzero(groups == g)[0].tolist())
        assert idx <= test or idx <= train or idx <= ex, f"group {g} straddles"


def test_split_on_tree_groups_stay_whole(tree, inventory):
    _, info = tree
    ds, inv = inventory
    groups = _groups_from_inventory(ds, inv)
    paths = [s.path for s in ds.samples]
    for seed in range(5):
        sp = D.split(ds.labels, groups, paths, seed=seed)
        ex = {paths[i] for i in sp.excluded}
        assert ex == set(info["cross_label_duplicate"])
        test = {paths[i] for i in sp.test}
        a, b = info["near_duplicate"]
        assert (a in test) == (b in test)
        for c in range(3):
            n = sum(1 for i in range(len(paths)) if ds.labels[i] == c and paths[i] not in ex)
            n_test = sum(1 for i in sp.test if ds.labels[i] == c)
            # groups of 2 may overshoot by one
            assert abs(n_test - 0.15 * n) <= 1.5, (seed, c, n_test, n)


def test_split_keeps_mixed_when_asked():
    labels, groups, paths = _synthetic_split_input()
    sp = D.split(labels, groups, paths, seed=0, drop_mixed=False)
    assert len(sp.excluded) == 0
    assert len(sp.train) + len(sp.test) == len(labels)


def test_split_deterministic_and_seed_dependent():
    labels, groups, paths = _synthetic_split_input()
    a = D.split(labels, groups, paths, seed=3)
    b = D.split(labels, groups, paths, seed=3)
    c = D.split(labels, groups, paths, seed=4)
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.train, b.train)
    assert a.digest(paths) == b.digest(paths)
    assert set(a.test.tolist()) != set(c.test.tolist())
    assert a.digest(paths) != c.digest(paths)


def test_split_independent_of_file_order():
    labels, groups, paths = _synthetic_split_input()
    ref = D.split(labels, groups, paths, seed=7)
    ref_test = {paths[i] for i in ref.test}
    ref_ex = {paths[i] for i in ref.excluded}
    for s in range(3):
        perm = np.random.default_rng(100 + s).permutation(len(labels))
        p_labels, p_paths = labels[perm], [paths[i] for i in perm]
        # group ids after the shuffle: index of the group's first member in the new order
        old = groups[perm]
        first = {}
        p_groups = np.array([first.setdefault(g, i) for i, g in enumerate(old)])
        sp = D.split(p_labels, p_groups, p_paths, seed=7)
        assert {p_paths[i] for i in sp.test} == ref_test
        assert {p_paths[i] for i in sp.excluded} == ref_ex
        assert sp.digest(p_paths) == ref.digest(paths)


def test_split_rejects_bad_fraction():
    labels, groups, paths = _synthetic_split_input()
    with pytest.raises(ValueError):
        D.split(labels, groups, paths, seed=0, test_fraction=1.5)


def test_group_kfold_keeps_groups_whole():
    labels, groups, paths = _synthetic_split_input()
    k = 5
    fold = D.group_kfold(labels, groups, paths, k=k, seed=0)
    assert fold.shape == labels.shape
    assert fold.min() == 0 and fold.max() == k - 1
    assert (fold >= 0).all()
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1, f"group {g} split across folds"
    # classes spread evenly: per class, fold sizes differ by at most the largest group (2) + 1
    for c in range(3):
        sizes = np.bincount(fold[labels == c], minlength=k)
        assert sizes.max() - sizes.min() <= 3, (c, sizes)
    np.testing.assert_array_equal(fold, D.group_kfold(labels, groups, paths, k=k, seed=0))
    assert not np.array_equal(fold, D.group_kfold(labels, groups, paths, k=k, seed=1))


# --------------------------------------------------------------------------- odd images
def test_read_rgb_16bit_is_scaled(odd):
    with Image.open(odd["gray16_png"]) as im:
        assert im.mode.startswith("I")
        raw = np.asarray(im).astype(np.float64)
    rgb = read_rgb(odd["gray16_png"])
    assert rgb.dtype == np.uint8 and rgb.shape == raw.shape + (3,)
    exp = np.clip(np.round(raw / 257.0), 0, 255)
    np.testing.assert_array_equal(rgb[..., 0], exp)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb.min() == 0 and rgb.max() == 255
    assert (rgb == 255).mean() < 0.01, "a naive clip would saturate most pixels"


def test_read_rgb_rgba_composited_on_black(odd):
    with Image.open(odd["rgba_png"]) as im:
        a = np.asarray(im.convert("RGBA")).astype(np.float64)
    rgb = read_rgb(odd["rgba_png"])
    assert rgb.shape == a.shape[:2] + (3,) and rgb.dtype == np.uint8
    w = a.shape[1]
    assert (rgb[:, : w // 3] == 0).all()  # fully transparent -> black
    opaque = slice(w // 2, None)
    np.testing.assert_array_equal(rgb[:, opaque], a[:, opaque, :3])
    band = slice(w // 3, w // 2)
    exp = a[:, band, :3] * 128 / 255
    assert np.abs(rgb[:, band] - exp).max() <= 1.0
    assert rgb[:, band].max() > 0


def test_read_rgb_palette_and_la(odd):
    with Image.open(odd["palette_png"]) as im:
        assert im.mode == "P"
        exp = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_rgb(odd["palette_png"]), exp)
    with Image.open(odd["la_png"]) as im:
        assert im.mode == "LA"
        la = np.asarray(im)
    rgb = read_rgb(odd["la_png"])
    h = la.shape[0]
    assert (rgb[: h // 4] == 0).all()  # alpha 0 -> black
    np.testing.assert_array_equal(rgb[h // 4:, :, 0], la[h // 4:, :, 0])
    assert rgb[h // 4:].max() > 0


def test_read_rgb_applies_exif_orientation(odd):
    rgb = read_rgb(odd["exif_rot6_jpg"])
    w, h = EXIF_JPEG_DISPLAY_SIZE
    assert rgb.shape == (h, w, 3)
    assert EXIF_JPEG_STORED_SIZE == (h, w)
    m = EXIF_JPEG_MARKER
    tr = rgb[4:m - 4, w - m + 4:w - 4]
    tl = rgb[4:m - 4, 4:m - 4]
    assert tr.mean() > 200, "marker must be in the top-right after orientation"
    assert tl.mean() < 80, "the stored corner must be dark after orientation"


def test_read_rgb_bmp_and_tiff(odd):
    with Image.open(odd["bmp"]) as im:
        exp_bmp = np.asarray(im.convert("RGB"))
    bmp = read_rgb(odd["bmp"])
    np.testing.assert_array_equal(bmp, exp_bmp)
    assert not (bmp[..., 0] == bmp[..., 1]).all()  # a real colour image
    with Image.open(odd["tiff"]) as im:
        g = np.asarray(im)
    tif = read_rgb(odd["tiff"])
    for ch in range(3):
        np.testing.assert_array_equal(tif[..., ch], g)


def test_read_rgb_decompression_bomb_guard(odd):
    path = odd["bmp"]
    with pytest.raises(ImageError, match="decompression bomb") as e:
        read_rgb(path, max_pixels=1000)
    assert path.name in str(e.value)
    assert read_rgb(path, max_pixels=300 * 210).shape == (210, 300, 3)


def test_content_sha256_depends_on_pixels_and_shape():
    a = np.zeros((4, 6, 3), np.uint8)
    assert content_sha256(a) == content_sha256(a.copy())
    assert content_sha256(a) != content_sha256(a.reshape(6, 4, 3))
    b = a.copy()
    b[0, 0, 0] = 1
    assert content_sha256(a) != content_sha256(b)
