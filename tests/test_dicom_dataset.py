"""DICOM images in a dataset folder: discovery, masks, inspect, extract, CLI, privacy.

A small synthetic BUSI tree is written twice: as PNGs, and with some images replaced
by ultrasound DICOM wraps of the same pixels (inside a fake scanner frame, with a 2D
region on the image and a fake patient). Everything read from the DICOM tree must
equal the PNG tree bit for bit, and the fake patient must appear nowhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pydicom", minversion="3.0", reason='pydicom>=3 missing: pip install "busi-lite[dicom]"')

import dicom_synth as S
from synth import make_busi_tree

from busi_lite.cli import main
from busi_lite.features import cache as F
from busi_lite.io import data as D
from busi_lite.io.imread import read_gray, read_rgb

PATIENT = "Quixote^Dulcinea"           # a name that cannot occur by chance in any output
SECRETS = (PATIENT, "Quixote", "Dulcinea", S.FAKE_ID, S.FAKE_BIRTH, S.FAKE_ACCESSION, S.FAKE_INSTITUTION)
MARGIN = 12
VIEWS = ("flip", "roi", "masked", "box")

# PNG image -> its DICOM replacement (name in the same folder); how its mask is stored
REPLACE = {
    "benign/benign (1).png": ("benign (1).dcm", "image"),         # mask at the cropped image's size
    "benign/benign (2).png": ("benign (2).dcm", "frame"),         # mask at the full frame's size
    "malignant/malignant (2).png": ("malignant (2)", "image"),    # extensionless, found by its preamble
    "normal/normal (1).png": ("normal (1).dcm", "image"),
}


def _pixels(path):
    """The image as read_rgb gives it, grey as [H,W] (wrapped as MONOCHROME2)."""
    rgb = read_rgb(path)
    return rgb[..., 0].copy() if (rgb == rgb[..., :1]).all() else rgb


def _dicomify(root):
    """Replace the REPLACE images under ``root`` by DICOM wraps; -> {png rel: dicom rel}."""
    renamed = {}
    for rel, (name, mask_kind) in REPLACE.items():
        png = root / rel
        S.wrap_png_as_dicom(_pixels(png), png.parent / name, margin=MARGIN, patient_name=PATIENT)
        png.unlink()
        for m in png.parent.glob(png.stem + "_mask*.png"):
            if mask_kind == "frame":  # the mask drawn on the whole scanner frame: padded by the margin
                from PIL import Image

                a = np.asarray(Image.open(m).convert("L"))
                Image.fromarray(np.pad(a, MARGIN)).save(m)
        renamed[rel] = f"{png.parent.name}/{name}"
    return renamed


@pytest.fixture(scope="module")
def trees(tmp_path_factory, tiny_backbone):
    base = tmp_path_factory.mktemp("dicomtree")
    png_root, dcm_root = base / "png", base / "dcm"
    make_busi_tree(png_root, n_per_class=(3, 5, 4), seed=3, extras=False)
    shutil.copytree(png_root, dcm_root)
    renamed = _dicomify(dcm_root)
    caches = {}
    for name, root in (("png", png_root), ("dcm", dcm_root)):
        caches[name] = base / f"{name}.h5"
        F.extract(root, caches[name], backbone=tiny_backbone, views=VIEWS, progress=False, log=lambda m: None)
    return png_root, dcm_root, renamed, caches


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_wrapped_files_really_carry_the_fake_patient(trees):
    _, dcm_root, renamed, _ = trees
    raw = (dcm_root / renamed["benign/benign (1).png"]).read_bytes()
    assert PATIENT.encode() in raw and raw[128:132] == b"DICM"


def test_discover_finds_dicom_and_pairs_masks(trees):
    png_root, dcm_root, renamed, _ = trees
    want = {renamed.get(s.path, s.path): s for s in D.discover(png_root).samples}
    ds = D.discover(dcm_root)
    assert not ds.problems
    got = {s.path: s for s in ds.samples}
    assert sorted(got) == sorted(want)
    for rel, s in got.items():
        assert s.label == want[rel].label
        assert [m.split("/")[1] for m in s.mask_paths] == [m.split("/")[1] for m in want[rel].mask_paths]
    assert got["malignant/malignant (2)"].mask_paths == ("malignant/malignant (2)_mask.png",)


def test_dicom_reads_as_the_png_pixels_and_full_frame_mask_is_cropped(trees):
    png_root, dcm_root, renamed, _ = trees
    for rel, drel in renamed.items():
        rgb = read_rgb(dcm_root / drel)
        assert np.array_equal(rgb, read_rgb(png_root / rel)), rel
        s_png = next(s for s in D.discover(png_root).samples if s.path == rel)
        s_dcm = next(s for s in D.discover(dcm_root).samples if s.path == drel)
        size = (rgb.shape[1], rgb.shape[0])
        assert np.array_equal(D.read_mask(dcm_root, s_dcm, size), D.read_mask(png_root, s_png, size)), rel
    # benign (2)'s mask is the frame's size: it really differs from the image, and is cropped
    m = dcm_root / "benign" / "benign (2)_mask.png"
    assert read_gray(m).shape[0] == read_rgb(dcm_root / "benign" / "benign (2).dcm").shape[0] + 2 * MARGIN


def test_inspect_equals_png_tree(trees):
    png_root, dcm_root, _, _ = trees
    a, b = D.inspect(D.discover(png_root)), D.inspect(D.discover(dcm_root))
    assert b["problems"] == []
    for k in ("counts", "with_lesion_mask", "extra_masks", "width", "height"):
        assert a[k] == b[k], k
    assert not _leaks(json.dumps(b))


def test_extract_is_bit_identical_to_png_tree(trees):
    _, _, renamed, caches = trees
    with h5py.File(caches["png"], "r") as fa, h5py.File(caches["dcm"], "r") as fb:
        pa = [p.decode() for p in fa["index/path"][:]]
        pb = [p.decode() for p in fb["index/path"][:]]
        assert len(pa) == len(pb) == 12
        order = [pb.index(renamed.get(p, p)) for p in pa]   # row of each PNG image in the DICOM cache
        for key in ("content_sha256", "phash", "has_mask", "label", "width", "height", "group"):
            assert np.array_equal(fa[f"index/{key}"][:], fb[f"index/{key}"][:][order]), key
        assert np.array_equal(fa["mask224"][:], fb["mask224"][:][order])
        for grp in ("features", "pooled", "grid", "valid"):
            assert sorted(fa[grp]) == sorted(fb[grp]) and len(fa[grp]) == 1 + len(VIEWS)
            for v in fa[grp]:
                assert np.array_equal(fa[f"{grp}/{v}"][:], fb[f"{grp}/{v}"][:][order]), f"{grp}/{v}"
        assert fb["valid/roi"][:][pb.index("benign/benign (2).dcm")]   # the cropped full-frame mask was used


def test_patient_appears_nowhere_in_the_cache(trees):
    _, _, _, caches = trees
    raw = caches["dcm"].read_bytes()
    assert not [s for s in SECRETS if s.encode() in raw]
    with h5py.File(caches["dcm"], "r") as f:
        assert not _leaks(json.dumps({k: str(v) for k, v in f.attrs.items()}))


@pytest.fixture
def dcm_copy(trees, tmp_path):
    root = tmp_path / "dcm"
    shutil.copytree(trees[1], root)
    return root


def test_cine_and_bad_masks_are_named_problems_the_rest_runs(dcm_copy, tiny_backbone, tmp_path):
    root = dcm_copy
    frames = np.stack([np.full((40, 50), 30 * k, np.uint8) for k in range(3)])
    S.write(S.make_dataset(frames, regions=[S.region_item(5, 5, 45, 35)], patient_name=PATIENT),
            root / "benign" / "cine.dcm")
    # a mask of neither the image's nor the frame's size
    from PIL import Image

    Image.new("L", (7, 9)).save(root / "malignant" / "malignant (2)_mask.png")
    ds = D.discover(root)
    assert not ds.problems and "benign/cine.dcm" in [s.path for s in ds.samples]
    inv = D.inspect(ds)
    probs = {p["path"]: p for p in inv["problems"]}
    assert sorted(probs) == ["benign/cine.dcm", "malignant/malignant (2)"]
    cine = probs["benign/cine.dcm"]
    assert cine["what"] == "a 3-frame cine; datasets take one image per file"
    assert cine["fix"] == "export the frame you want as its own file"
    assert "7x9" in probs["malignant/malignant (2)"]["what"]
    assert sum(inv["counts"].values()) == 11
    s = F.extract(root, tmp_path / "c.h5", backbone=tiny_backbone, views=(), progress=False, log=lambda m: None)
    assert s["images"] == 11 and len(s["problems"]) == 2
    assert any("cine.dcm: a 3-frame cine" in p for p in s["problems"])
    assert not _leaks(json.dumps(inv) + json.dumps(s, default=str))


def test_without_pydicom_each_dicom_file_is_a_problem(dcm_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)      # `import pydicom` now raises ImportError
    ds = D.discover(dcm_copy)                               # discovery needs no pydicom
    assert len(ds.samples) == 12 and not ds.problems
    inv = D.inspect(ds)
    probs = {p["path"]: p for p in inv["problems"]}
    assert sorted(probs) == ["benign/benign (1).dcm", "benign/benign (2).dcm",
                             "malignant/malignant (2)", "normal/normal (1).dcm"]
    for p in probs.values():
        assert "pydicom" in p["what"] and 'pip install "busi-lite[dicom]"' in p["fix"]
    assert sum(inv["counts"].values()) == 8


def test_dicom_suffixes_agree():
    pass



def test_discovery_skips_hidden_and_non_dicom_extensionless_files(dcm_copy):
    (dcm_copy / "benign" / ".DS_Store").write_bytes(b"\0" * 200)
    (dcm_copy / "benign" / ".hidden.dcm").write_bytes(b"\0" * 200)
    (dcm_copy / "benign" / "README").write_text("notes, not an image\n" * 10)
    fifo = dcm_copy / "benign" / "pipe"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
    ds = D.discover(dcm_copy)
    paths = {p.path: p.what for p in ds.problems}
    assert paths.pop("benign/README") == "not an image file (ignored)"
    if hasattr(os, "mkfifo"):
        assert paths.pop("benign/pipe") == "not an image file (ignored)"
    assert paths == {} and len(ds.samples) == 12


def test_cli_data_check_and_extract(dcm_copy, tiny_backbone, tmp_path):
    r = CliRunner().invoke(main, ["data", "check", str(dcm_copy), "--json"])
    assert r.exit_code == 0, r.output
    inv = json.loads(r.stdout)
    assert sum(inv["counts"].values()) == 12 and inv["problems"] == []
    r2 = CliRunner().invoke(main, ["data", "check", str(dcm_copy)])
    assert r2.exit_code == 0 and "problems: 0" in r2.output
    out = tmp_path / "cli.h5"
    r3 = CliRunner().invoke(main, ["extract", "--data", str(dcm_copy), "--backbone", str(tiny_backbone),
                                   "--out", str(out), "--views", "", "--json"])
    assert r3.exit_code == 0, r3.output
    s = json.loads(r3.stdout)
    assert s["images"] == 12 and s["problems"] == []
    with h5py.File(out, "r") as f:
        assert "benign/benign (1).dcm" in [p.decode() for p in f["index/path"][:]]
    for text in (r.output, r2.output, r3.output):
        assert not _leaks(text)
    assert not [x for x in SECRETS if x.encode() in out.read_bytes()]


def test_cli_evaluate_data_on_dicom_tree_equals_png_tree(trees, tiny_backbone, tmp_path):
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import Config
    from busi_lite.training.experiments import fit_model

    train_root, train_cache = tmp_path / "train", tmp_path / "train.h5"
    make_busi_tree(train_root, n_per_class=(4, 6, 5), seed=11, extras=False)
    F.extract(train_root, train_cache, backbone=tiny_backbone, views=(), progress=False, log=lambda m: None)
    with FeatureCache(train_cache) as fc:
        model, _ = fit_model(fc, Config.build(name="tiny", epochs=10, head="plain", hidden=8, lr=1e-3, batch=8), seed=0)
    model.save(tmp_path / "tiny")
    png_root, dcm_root, renamed, _ = trees
    got = {}
    for name, root in (("png", png_root), ("dcm", dcm_root)):
        r = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "tiny"), "--data", str(root),
                                      "--cache", str(tmp_path / f"eval_{name}.h5"), "--backbone",
                                      str(tiny_backbone), "--json", "--per-image"])
        assert r.exit_code == 0, r.output
        assert not _leaks(r.output)
        got[name] = json.loads(r.stdout)
    a, b = got["png"], got["dcm"]
    assert a["n"] == b["n"] == 12
    rows_b = {row["path"]: row for row in b["per_image"]}
    for row in a["per_image"]:
        other = rows_b[renamed.get(row["path"], row["path"])]
        assert {k: v for k, v in other.items() if k != "path"} == {k: v for k, v in row.items() if k != "path"}
    assert renamed["benign/benign (2).png"] in rows_b
    assert all(len(row["proba"]) == 3 for row in a["per_image"])     # probabilities were compared
    assert a["auc"] == b["auc"] and a["confusion"] == b["confusion"]
