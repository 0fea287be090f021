"""predict on DICOM: pydicom's ultrasound test files, cine frames, wrapped BUSI images, privacy.

With the real assets (BUSI_LITE_DATA + BUSI_LITE_BACKBONE) the committed default model
answers and real BUSI test images (from its sidecar's held-out test split) are wrapped;
without them a tiny synthetic model and synthetic images stand in, so every test runs.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pydicom = pytest.importorskip("pydicom")

from dicom_synth import FAKE_ID, FAKE_NAME, FAKE_VALUES, wrap_png_as_dicom

from busi_lite.cli import main
from busi_lite.common.errors import ConfigError
from busi_lite.io.imread import read_rgb
from busi_lite.serving.inference import Predictor

EXAMPLES = {"examples_palette.dcm": 1, "examples_ybr_color.dcm": 30, "examples_rgb_color.dcm": 1,
            "examples_jpeg2k.dcm": 1}
MARGIN = 40


@pytest.fixture(scope="session")
def serving(request):
    """{kind, model, backbone, images}: the real default model and 3 real held-out test images
    (one per class), else a tiny synthetic multi-task model and 3 synthetic images."""
    try:
        backbone = request.getfixturevalue("real_backbone")
        data = request.getfixturevalue("real_data")
    except pytest.skip.Exception:
        backbone = data = None
    if backbone is not None:
        from busi_lite.common.resources import packaged

        model = packaged("model")
        meta = json.loads(model.with_name(model.name + ".json").read_text())
        tp = meta["test_predictions"]
        images = [data / next(p for p, y in zip(tp["path"], tp["y"]) if y == c) for c in range(3)]
        return {"kind": "real", "model": model, "backbone": backbone, "images": images}
    world = request.getfixturevalue("tiny_world")  # conftest.py: shared, read-only; built only when needed
    return {"kind": "synthetic", "model": world["model"], "backbone": world["backbone"],
            "images": world["images"][:3]}


def _args(s):
    return ["--model", str(s["model"]), "--backbone", str(s["backbone"])]


def _cli(args):
    return CliRunner().invoke(main, ["predict"] + [str(a) for a in args])


def _example(name) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


# --------------------------------------------------------------------------- #
# pydicom's real ultrasound files
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_pydicom_examples_decode_and_predict(serving, name):
    path = _example(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    r = _cli([path, "--json"] + _args(serving))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    n = EXAMPLES[name]
    assert len(out) == n and [o["frame"] for o in out] == list(range(n))
    for o in out:
        assert o["ok"] and o["path"] == str(path) and o["n_frames"] == n
        assert o["sop_instance_uid"] == str(ds.SOPInstanceUID)
        unusual = [f for f in o["flags"] if f["name"] == "unusual_input"]
        if unusual:   # not a breast scan: no verdict, and the reason why
            assert o["label"] is None and o["proba"] is None and o["malignant_alert"] is None
            assert o["withheld"] == f"unusual input: {unusual[0]['reason']}"
        else:
            assert abs(sum(o["proba"].values()) - 1) < 1e-5 and o["label"] in o["proba"]
        assert o["model"]["digest"] and o["model"]["name"]
        w, h = o["size"]
        l, t, rr, b = o["crop_box"]
        x0, y0 = (o["dicom_crop"] or [0, 0])[:2]
        assert (rr - l, b - t) == (min(w, h),) * 2 and l >= x0 and t >= y0      # frame pixels
        assert rr <= ds.Columns and b <= ds.Rows
    if name == "examples_palette.dcm":  # it has ultrasound regions: the crop is recorded
        assert out[0]["dicom_crop"] is not None and out[0]["size"] != [ds.Columns, ds.Rows]
        # not a breast scan: the verdict is withheld in the text too; --show-anyway gives it (research use)
        assert out[0]["label"] is None and out[0]["withheld"]
        for f in out[0]["flags"]:   # no other flag's reason names the withheld class
            assert f["name"] == "unusual_input" or not any(c in f["reason"] for c in ("normal", "benign", "malignant"))
        text = _cli([path] + _args(serving)).stdout
        assert "VERDICT WITHHELD - unusual input" in text and "most probable" not in text and "REFER" not in text
        anyway = json.loads(_cli([path, "--json", "--show-anyway"] + _args(serving)).stdout)[0]
        assert anyway["label"] in anyway["proba"] and anyway["withheld"] is None
        assert any("shown anyway" in n for n in anyway["notes"])
    # the files' own patient values never show up
    for v in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
        if len(v) >= 5:
            assert v not in r.stdout and v not in r.stderr


def test_cine_frame_option_and_api(serving, tmp_path):
    path = _example("examples_ybr_color.dcm")
    r = _cli([path, "--json", "--frame", "3"] + _args(serving))
    assert r.exit_code == 0, r.output
    one = json.loads(r.stdout)
    assert len(one) == 1 and one[0]["frame"] == 3 and one[0]["n_frames"] == 30
    pr = Predictor(serving["model"], serving["backbone"])
    every = pr.predict([path])
    assert [p.frame for p in every] == list(range(30))
    assert one[0]["proba"] == pytest.approx(every[3].proba, abs=1e-5)
    import busi_lite
    api = busi_lite.predict(path, model=serving["model"], backbone=serving["backbone"], frame=29)
    assert [p.frame for p in api] == [29] and api[0].ok
    # a frame the file does not have fails that file only; images ignore frame
    single = _example("examples_rgb_color.dcm")
    res = pr.predict([single, serving["images"][0]], frame=3)
    assert not res[0].ok and "out of range" in res[0].error and str(single) in res[0].error
    assert res[1].ok and res[1].frame is None
    with pytest.raises(ConfigError, match="frame"):
        pr.predict([path], frame=-1)
    # decoded frames through predict_arrays (as the web page does) give the same records
    from busi_lite.io import dicom
    frames = dicom.read_frames(path, 3)
    arr = pr.predict_arrays([f.rgb for f in frames], names=[str(path)], frames=frames)[0]
    assert (arr.frame, arr.sop_instance_uid, arr.crop_box) == (3, every[3].sop_instance_uid, every[3].crop_box)
    assert arr.proba == pytest.approx(every[3].proba, abs=1e-5)
    # overlays: one per frame, named from the file name
    res = pr.predict([path], overlay_dir=tmp_path / "ov", frame=None)
    names = sorted(Path(p.overlay).name for p in res)
    assert names == sorted(f"examples_ybr_color_f{i:03d}_overlay.png" for i in range(30))


# --------------------------------------------------------------------------- #
# BUSI images wrapped in synthetic ultrasound DICOMs
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def wrapped(serving, tmp_path_factory):
    base = tmp_path_factory.mktemp("wrapped")
    pngs, dcms = [], []
    for i, src in enumerate(serving["images"]):
        rgb = read_rgb(src)
        png = base / f"img{i}.png"
        from PIL import Image
        Image.fromarray(rgb).save(png)
        # a region around the image inside a fake scanner frame, a fake patient
        dcm = wrap_png_as_dicom(rgb, base / f"scan{i}.dcm", margin=MARGIN, patient_name=FAKE_NAME,
                                patient_id=FAKE_ID)
        pngs.append(png)
        dcms.append(dcm)
    # one without an extension: recognised by its DICM preamble
    bare = base / "scan_bare"
    bare.write_bytes(dcms[0].read_bytes())
    return {"base": base, "pngs": pngs, "dcms": dcms, "bare": bare}


def _run(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "busi_lite.cli", "predict"] + [str(a) for a in args],
                          capture_output=True, timeout=600, check=False)


def test_wrapped_equals_png_and_nothing_identifying_leaks(serving, wrapped, tmp_path):
    pngs, dcms = wrapped["pngs"], wrapped["dcms"] + [wrapped["bare"]]
    ov = tmp_path / "overlays"
    runs = {mode: _run(pngs + dcms + _args(serving) + extra) for mode, extra in
            (("json", ["--json", "--overlay", ov]), ("csv", ["--csv"]), ("human", []))}
    for mode, r in runs.items():
        assert r.returncode == 0, (mode, r.stderr.decode())
    out = json.loads(runs["json"].stdout)
    assert len(out) == len(pngs) + len(dcms)
    by_png = out[:len(pngs)]
    for o, d, png in zip(out[len(pngs):], dcms, pngs + [pngs[0]]):
        ref = by_png[pngs.index(png)]
        assert o["ok"] and o["path"] == str(d) and o["frame"] == 0 and o["n_frames"] == 1
        assert o["sop_instance_uid"] and o["sop_instance_uid"].startswith("1.2.")
        got = np.array([o["proba"][c] for c in ref["proba"]])
        assert np.abs(got - np.array(list(ref["proba"].values()))).max() < 1e-5
        assert o["label"] == ref["label"] and o["malignant_alert"] == ref["malignant_alert"]
        w, h = ref["size"]
        assert o["size"] == [w, h] and o["dicom_crop"] == [MARGIN, MARGIN, MARGIN + w, MARGIN + h]
        # boxes are given in the stored frame's pixels: the PNG's, shifted by the region's origin
        assert o["crop_box"] == [v + MARGIN for v in ref["crop_box"]]
        if ref["lesion_bbox"]:
            assert o["lesion_bbox"] == [v + MARGIN for v in ref["lesion_bbox"]]
            assert np.abs(np.array(o["lesion"]) - np.array(ref["lesion"])).max() < 1e-3
        assert o["flags"] == ref["flags"] or serving["kind"] == "synthetic"
    rows = list(csv.DictReader(io.StringIO(runs["csv"].stdout.decode())))
    assert [row["frame"] for row in rows] == [""] * len(pngs) + ["0"] * len(dcms)
    assert all(row["sop_instance_uid"] for row in rows[len(pngs):])
    human = runs["human"].stdout.decode()
    assert "SOP Instance UID" in human and "[frame 0 of 1]" in human
    # privacy: no fake patient value anywhere (text outputs: every value; overlays: the long ones)
    assert FAKE_NAME.encode() in dcms[0].read_bytes() and FAKE_ID.encode() in dcms[0].read_bytes()  # they are there
    for mode, r in runs.items():
        for v in FAKE_VALUES:
            assert v.encode() not in r.stdout and v.encode() not in r.stderr, (mode, v)
    overlays = sorted(ov.iterdir())
    assert len(overlays) == len(pngs) + len(dcms)
    assert {p.name for p in overlays} >= {f"scan{i}_overlay.png" for i in range(len(wrapped["dcms"]))}
    for p in overlays:
        blob = p.read_bytes()
        for v in (FAKE_NAME, FAKE_ID, "Hospital Of Secrets", "ACC987654"):
            assert v.encode() not in blob, (p, v)
    # the overlay of a DICOM is drawn on the region: same picture size as the PNG's
    from PIL import Image
    with Image.open(ov / "scan0_overlay.png") as a, Image.open(ov / "img0_overlay.png") as b:
        assert a.size[0] == b.size[0]


def test_folder_expands_to_images_and_dicom(serving, wrapped, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes(wrapped["pngs"][0].read_bytes())
    (folder / "a_mask.png").write_bytes(wrapped["pngs"][1].read_bytes())
    (folder / "b.dcm").write_bytes(wrapped["dcms"][1].read_bytes())
    (folder / "c").write_bytes(wrapped["dcms"][2].read_bytes())           # no extension, DICM preamble
    (folder / ".hidden.dcm").write_bytes(wrapped["dcms"][0].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    pr = Predictor(serving["model"], serving["backbone"])
    res = pr.predict([folder])
    assert [Path(p.path).name for p in res] == ["a.png", "b.dcm", "c"]
    assert all(p.ok for p in res) and [p.frame for p in res] == [None, 0, 0]


def test_non_dicom_dcm_fails_only_that_file(serving, wrapped, tmp_path):
    bad = tmp_path / "report.dcm"
    bad.write_text("this is a text file, not DICOM\n" * 20)
    r = _cli([wrapped["pngs"][0], bad, wrapped["dcms"][0], "--json"] + _args(serving))
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert [o["ok"] for o in out] == [True, False, True]
    assert str(bad) in out[1]["error"] and "->" in out[1]["error"]
    assert any(str(bad) in ln for ln in r.stderr.splitlines() if ln.startswith("error:"))
    # a damaged DICOM (junk JPEG data) with a fake patient: its error names the file, never the patient
    from dicom_synth import make_dataset, with_encapsulated, write
    from pydicom.uid import JPEGBaseline8Bit

    junk = write(with_encapsulated(make_dataset(np.zeros((64, 64), np.uint8)), JPEGBaseline8Bit), tmp_path / "junk.dcm")
    r = _cli([junk, wrapped["pngs"][0], "--json"] + _args(serving))
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and [o["ok"] for o in out] == [False, True] and str(junk) in out[0]["error"]
    for v in FAKE_VALUES:
        assert v not in r.stdout and v not in r.stderr


def test_missing_pydicom_is_one_clear_error_per_file(serving, wrapped, monkeypatch):
    pr = Predictor(serving["model"], serving["backbone"])
    monkeypatch.setitem(sys.modules, "pydicom", None)   # import pydicom -> ImportError
    res = pr.predict([wrapped["dcms"][0], wrapped["pngs"][0]])
    assert not res[0].ok and res[1].ok
    assert str(wrapped["dcms"][0]) in res[0].error
    assert 'reading DICOM needs pydicom -> pip install "busi-lite[dicom]"' in res[0].error


def test_real_assets_are_used_when_given(serving):
    import os

    given = all(os.environ.get(v, "").strip() for v in ("BUSI_LITE_DATA", "BUSI_LITE_BACKBONE"))
    assert (serving["kind"] == "real") == given or not given
    if given:
        assert Path(serving["model"]).name == "busi_lite_default" and len(serving["images"]) == 3
