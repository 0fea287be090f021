"""DICOM limits: Deflated data inflated with a cap, PixelData longer than its header, decoding from
memory, SOP Instance UIDs that are not UIDs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", minversion="3.0",
                              reason='pydicom>=3 missing: pip install "busi-lite[dicom]"')

import dicom_synth as S  # noqa: E402
from pydicom.uid import DeflatedExplicitVRLittleEndian  # noqa: E402

from busi_lite.io import dicom as D


def _image(seed=0, h=40, w=50):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _deflated(path, pixels, extra_pixel_bytes=0):
    ds = S.make_dataset(pixels)
    if extra_pixel_bytes:
        ds.PixelData = ds.PixelData + bytes(extra_pixel_bytes)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return S.write(ds, path)


def test_deflated_file_decodes_bit_exact(tmp_path):
    img = _image()
    p = _deflated(tmp_path / "d.dcm", img)
    fr = D.read_frames(p)
    assert len(fr) == 1 and np.array_equal(fr[0].rgb[..., 0], img)
    assert "Deflated" in fr[0].transfer_syntax


def test_deflate_bomb_is_refused_without_inflating_it(tmp_path):
    # 10x10 pixels declared, 200 MB of zeros behind them: a ~200 KB file
    p = _deflated(tmp_path / "bomb.dcm", np.zeros((10, 10), np.uint8), extra_pixel_bytes=200 << 20)
    assert p.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(D.DicomError, match="bomb.dcm.*inflates past"):
            D.read_frames(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"peak {peak / 2**20:.0f} MB while refusing a 200 MB deflate bomb"


def test_native_pixel_data_longer_than_its_header_is_refused(tmp_path):
    ds = S.make_dataset(np.zeros((10, 10), np.uint8))
    ds.PixelData = bytes(100 + (1 << 20))
    p = S.write(ds, tmp_path / "long.dcm")
    with pytest.raises(D.DicomError, match=r"long.dcm: PixelData holds 1,048,676 bytes, its header declares 100"):
        D.read_frames(p)


def test_decoding_from_memory_equals_the_file_and_names_the_upload(tmp_path):
    img = _image(1)
    p = S.wrap_png_as_dicom(img, tmp_path / "a.dcm", margin=6)
    blob = p.read_bytes()
    from_file, from_memory = D.read_frames(p)[0], D.read_frames("upload.dcm", data=blob)[0]
    assert np.array_equal(from_file.rgb, from_memory.rgb) and from_memory.source == "upload.dcm"
    with pytest.raises(D.DicomError, match="^upload.dcm: "):
        D.read_frames("upload.dcm", data=blob[:400])


def test_a_sop_instance_uid_that_is_not_a_uid_is_left_out(tmp_path):
    ds = S.make_dataset(_image(2))
    ds.SOPInstanceUID = "1.2.3"
    assert D.read_frames(S.write(ds, tmp_path / "ok.dcm"))[0].sop_instance_uid == "1.2.3"
    ds = S.make_dataset(_image(2))
    ds.SOPInstanceUID = "Doe^Jane <script>"
    assert D.read_frames(S.write(ds, tmp_path / "bad.dcm"))[0].sop_instance_uid is None
    assert D.valid_uid("1." * 40 + "1") is None          # over 64 characters


@pytest.mark.parametrize("region, says", [
    ((30, 10, 5, 40), "inverted"),                  # x1 < x0
    ((500, 500, 600, 600), "outside the 50x40 frame"),
    ((10, 10, 11, 11), "under 8 px inside"),        # would be a 1x1 crop
])
def test_an_unusable_region_is_named_and_the_whole_frame_used(tmp_path, region, says):
    img = _image(3)
    ds = S.make_dataset(img, regions=[S.region_item(0, 0, 1, 1)])
    item = ds.SequenceOfUltrasoundRegions[0]
    x0, y0, x1, y1 = region
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1 - 1, y1 - 1
    fr = D.read_frames(S.write(ds, tmp_path / "r.dcm"))[0]
    assert fr.crop is None and np.array_equal(fr.rgb[..., 0], img)          # explicit fallback: whole frame
    assert len(fr.notes) == 1 and says in fr.notes[0] and "the whole frame used" in fr.notes[0]


def test_the_region_note_reaches_predict_and_the_web_record(tiny_world, tmp_path):
    from busi_lite.serving.inference import Predictor

    ds = S.make_dataset(_image(4, 64, 80), regions=[S.region_item(0, 0, 1, 1)])
    item = ds.SequenceOfUltrasoundRegions[0]
    item.RegionLocationMinX0, item.RegionLocationMaxX1 = 50, 9            # inverted
    path = S.write(ds, tmp_path / "inv.dcm")
    pr = Predictor(tiny_world["model"], tiny_world["backbone"])
    p = pr.predict([path])[0]
    assert p.ok and any("ultrasound region not used (inverted" in n for n in p.notes)
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from busi_lite.web.app import create_app

    c = TestClient(create_app(pr), base_url="http://127.0.0.1")
    rec = c.post("/api/predict", files=[("files", ("inv.dcm", path.read_bytes(), "application/dicom"))]).json()[0]
    assert rec["ok"] and any("ultrasound region not used (inverted" in n for n in rec["notes"])
