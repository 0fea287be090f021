"""busi_lite.io.dicom: pydicom's real ultrasound files and synthetic DICOMs (no network)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", minversion="3.0",
                              reason='pydicom>=3 missing: pip install "busi-lite[dicom]"')

import dicom_synth as S  # noqa: E402
from pydicom import uid  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.pixels import apply_color_lut, get_decoder  # noqa: E402

from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.io import dicom as D

# name -> (n_frames, (H, W) after the crop, crop)
EXAMPLES = {
    "examples_palette.dcm": (1, (290, 680), (120, 60, 800, 350)),    # regions run past the frame: clamped
    "examples_ybr_color.dcm": (30, (209, 236), (84, 31, 320, 240)),  # JPEG baseline YBR_FULL_422 cine
    "examples_rgb_color.dcm": (1, (240, 320), None),
    "examples_jpeg2k.dcm": (1, (480, 640), None),
}


def example(name: str) -> str:
    path = get_testdata_file(name)
    assert path, f"pydicom's wheel should ship {name}"
    dec = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    if not dec.is_available:
        pytest.skip(f"{name}: no decoder plugin importable ({dec.missing_dependencies})")
    return path


def leaks(text: str) -> list[str]:
    return [v for v in S.FAKE_VALUES if v in text]


def assert_no_leak(frames):
    for f in frames:
        text = repr(f) + " ".join(str(getattr(f, k)) for k in
                                  ("frame", "n_frames", "crop", "sop_instance_uid", "source",
                                   "photometric", "transfer_syntax"))
        assert not leaks(text), text


# ---------------------------------------------------------------- real example files

@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_pydicom_examples_decode_to_rgb_uint8(name):
    path = example(name)
    n, hw, crop = EXAMPLES[name]
    assert D.is_dicom(path)
    frames = D.read_frames(path)
    assert len(frames) == n
    for i, f in enumerate(frames):
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (*hw, 3)
        assert (f.frame, f.n_frames, f.crop, f.source) == (i, n, crop, path)
        assert f.sop_instance_uid and f.transfer_syntax == str(
            pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
        assert f.rgb.max() > 100 and f.rgb.std() > 5        # an image, not a blank
    np.testing.assert_array_equal(D.read_dicom_rgb(path), frames[0].rgb)


def test_ybr_jpeg_matches_pydicoms_own_rgb_conversion():
    path = example("examples_ybr_color.dcm")
    ref = pydicom.dcmread(path).pixel_array            # pydicom's as_rgb path, all 30 frames
    x0, y0, x1, y1 = EXAMPLES["examples_ybr_color.dcm"][2]
    frames = D.read_frames(path)
    assert frames[0].photometric == "YBR_FULL_422"
    for i in (0, 29):
        np.testing.assert_array_equal(frames[i].rgb, ref[i, y0:y1, x0:x1])
    grey = frames[0].rgb[100:120, 100:120].astype(int)   # an echo image is near-grey
    assert np.abs(grey[..., 0] - grey[..., 2]).mean() < 3


def test_palette_goes_through_the_lut():
    path = example("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    x0, y0, x1, y1 = EXAMPLES["examples_palette.dcm"][2]
    lut = apply_color_lut(ds.pixel_array, ds)[y0:y1, x0:x1]
    assert lut.dtype == np.uint16 and lut.max() == 65280    # 16-bit entries, 8-bit values << 8
    np.testing.assert_array_equal(D.read_frames(path)[0].rgb, (lut >> 8).astype(np.uint8))


def test_frame_selection_and_out_of_range():
    path = example("examples_ybr_color.dcm")
    allf = D.read_frames(path)
    one = D.read_frames(path, frame=7)
    assert len(one) == 1 and one[0].frame == 7 and one[0].n_frames == 30
    np.testing.assert_array_equal(one[0].rgb, allf[7].rgb)
    for bad in (30, -1):
        with pytest.raises(D.DicomError) as e:
            D.read_frames(path, frame=bad)
        assert path in str(e.value) and "30 frames" in str(e.value)
    with pytest.raises(ConfigError) as e:
        D.read_frames(path, frame="2")
    assert e.value.param == "frame"


# ---------------------------------------------------------------- synthetic files

def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    m2 = D.read_frames(S.write(S.make_dataset(a, "MONOCHROME2"), tmp_path / "m2.dcm"))[0].rgb
    m1 = D.read_frames(S.write(S.make_dataset(a, "MONOCHROME1"), tmp_path / "m1.dcm"))[0].rgb
    np.testing.assert_array_equal(m2, np.repeat(a[..., None], 3, axis=2))
    np.testing.assert_array_equal(m1, 255 - m2)


def test_12_bit_data_scales_to_the_full_range(tmp_path):
    a = np.array([[0, 1, 2048, 4095]], dtype=np.uint16)
    f = D.read_frames(S.write(S.make_dataset(a, "MONOCHROME2", 12), tmp_path / "x.dcm"))[0]
    assert f.rgb[0, :, 0].tolist() == [0, 0, 128, 255]
    signed = np.array([[-2048, 0, 2047]], dtype=np.int16)
    f = D.read_frames(S.write(S.make_dataset(signed, "MONOCHROME2", 12), tmp_path / "s.dcm"))[0]
    assert f.rgb[0, :, 0].tolist() == [0, 128, 255]


def test_ybr_full_uncompressed_is_converted(tmp_path):
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    f = D.read_frames(S.write(S.make_dataset(ybr, "YBR_FULL"), tmp_path / "y.dcm"))[0]
    assert f.photometric == "YBR_FULL"
    assert np.abs(f.rgb.astype(int) - rgb).max() <= 3       # 8-bit round trip


def test_rle_lossless_decodes_bit_exact(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, size=(2, 12, 10, 3), dtype=np.uint8)
    ds = S.make_dataset(a, "RGB")
    ds.compress(uid.RLELossless)
    frames = D.read_frames(S.write(ds, tmp_path / "rle.dcm"))
    assert [f.transfer_syntax for f in frames] == ["RLE Lossless"] * 2
    for i in range(2):
        np.testing.assert_array_equal(frames[i].rgb, a[i])


def test_region_crop_gives_exactly_the_region(tmp_path):
    a = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 251
    a = a.astype(np.uint8)
    regions = [S.region_item(10, 5, 30, 25),                   # 2D
               S.region_item(20, 8, 45, 30),                   # 2D: the union reaches x=45, y=30
               S.region_item(0, 32, 60, 40, spatial_format=4)]  # waveform: ignored
    f = D.read_frames(S.write(S.make_dataset(a, regions=regions), tmp_path / "r.dcm"))[0]
    assert f.crop == (10, 5, 45, 30)
    np.testing.assert_array_equal(f.rgb[..., 1], a[5:30, 10:45])
    # a region past the frame is clamped; one wholly outside means no crop
    f = D.read_frames(S.write(S.make_dataset(a, regions=[S.region_item(50, 30, 90, 80)]),
                              tmp_path / "c.dcm"))[0]
    assert f.crop == (50, 30, 60, 40) and f.rgb.shape == (10, 10, 3)
    f = D.read_frames(S.write(S.make_dataset(a, regions=[S.region_item(70, 50, 90, 80)]),
                              tmp_path / "o.dcm"))[0]
    assert f.crop is None and f.rgb.shape == (40, 60, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_wrapped_image_reads_back_bit_exact(tmp_path, channels):
    rng = np.random.default_rng(channels)
    img = rng.integers(0, 256, size=(37, 53) if channels == 1 else (37, 53, 3), dtype=np.uint8)
    want = img if channels == 3 else np.repeat(img[..., None], 3, axis=2)
    f = D.read_frames(S.wrap_png_as_dicom(img, tmp_path / "m.dcm", margin=12))[0]
    assert f.crop == (12, 12, 65, 49)
    np.testing.assert_array_equal(f.rgb, want)
    f = D.read_frames(S.wrap_png_as_dicom(img, tmp_path / "n.dcm"))[0]
    assert f.crop is None
    np.testing.assert_array_equal(f.rgb, want)
    f = D.read_frames(S.wrap_png_as_dicom(img, tmp_path / "b.dcm", region=(3, 4, 20, 30)))[0]
    np.testing.assert_array_equal(f.rgb, want[4:30, 3:20])


def test_multiframe_synthetic_and_frame_index(tmp_path):
    cine = np.stack([np.full((6, 7), 40 * k, np.uint8) for k in range(4)])
    path = S.write(S.make_dataset(cine), tmp_path / "cine.dcm")
    frames = D.read_frames(path)
    assert [(f.frame, f.n_frames, int(f.rgb[0, 0, 0])) for f in frames] == [
        (k, 4, 40 * k) for k in range(4)]
    assert int(D.read_frames(path, frame=2)[0].rgb[0, 0, 0]) == 80
    np.testing.assert_array_equal(D.read_dicom_rgb(path), frames[0].rgb)


def test_is_dicom_by_suffix_or_preamble(tmp_path):
    from PIL import Image

    path = S.write(S.make_dataset(np.zeros((4, 4), np.uint8)), tmp_path / "IM0001")
    assert D.is_dicom(path)
    assert D.read_frames(path)[0].rgb.shape == (4, 4, 3)
    png = tmp_path / "image"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
    assert not D.is_dicom(png)
    (tmp_path / "short").write_bytes(b"DICM")
    assert not D.is_dicom(tmp_path / "short")
    assert D.is_dicom(tmp_path / "whatever.DCM") is False      # missing file
    (tmp_path / "empty.DCM").write_bytes(b"")
    assert D.is_dicom(tmp_path / "empty.DCM")                   # by suffix; reading it fails
    (tmp_path / "dir.dcm").mkdir()
    assert not D.is_dicom(tmp_path / "dir.dcm")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.dcm")
        assert not D.is_dicom(tmp_path / "fifo.dcm")            # never blocks on a FIFO
        with pytest.raises(D.DicomError, match="not a regular file"):
            D.read_frames(tmp_path / "fifo.dcm")


def test_non_dicom_and_truncated_files_name_the_file(tmp_path):
    from PIL import Image

    fake = tmp_path / "photo.dcm"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(fake, format="PNG")
    for path in (fake, tmp_path / "empty.dcm"):
        path.touch()
        with pytest.raises(D.DicomError) as e:
            D.read_frames(path)
        assert str(path) in str(e.value) and isinstance(e.value, BusiError)

    good = S.write(S.make_dataset(np.zeros((64, 64), np.uint8)), tmp_path / "good.dcm")
    data = good.read_bytes()
    for cut in (len(data) - 1000, 200):                # into the pixels / into the header
        bad = tmp_path / f"cut{cut}.dcm"
        bad.write_bytes(data[:cut])
        with pytest.raises(D.DicomError) as e:
            D.read_frames(bad)
        assert str(bad) in str(e.value)
        assert not leaks(str(e.value))


def test_unsupported_syntax_and_missing_plugin(tmp_path):
    ds = S.with_encapsulated(S.make_dataset(np.zeros((8, 8), np.uint8)), uid.MPEG2MPML)
    path = S.write(ds, tmp_path / "mpeg.dcm")
    with pytest.raises(D.DicomError) as e:
        D.read_frames(path)
    assert str(path) in str(e.value) and "MPEG2 Main Profile / Main Level" in str(e.value)
    assert "not supported" in str(e.value)

    if get_decoder(uid.JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed, so the missing-plugin message cannot show")
    ds = S.with_encapsulated(S.make_dataset(np.zeros((8, 8), np.uint8)), uid.JPEGLSLossless)
    path = S.write(ds, tmp_path / "jls.dcm")
    with pytest.raises(D.DicomError) as e:
        D.read_frames(path)
    msg = str(e.value)
    assert str(path) in msg and "JPEG-LS Lossless Image Compression" in msg
    assert "pip install pylibjpeg" in msg and not leaks(msg)


def test_oversized_declarations_are_refused_before_decoding(tmp_path):
    ds = S.make_dataset(np.zeros((8, 8), np.uint8))
    ds.Rows, ds.Columns = 8000, 8000                   # 64M pixels > MAX_PIXELS
    path = S.write(ds, tmp_path / "big.dcm")
    with pytest.raises(D.DicomError, match="pixel limit") as e:
        D.read_frames(path)
    assert str(path) in str(e.value)
    ds = S.make_dataset(np.zeros((2, 8, 8), np.uint8))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1000, 1000, D.MAX_TOTAL_PIXELS // 1_000_000 + 1
    path = S.write(ds, tmp_path / "long.dcm")
    with pytest.raises(D.DicomError, match="frames of 1000x1000"):
        D.read_frames(path, frame=0)


def test_nothing_identifying_leaks(tmp_path, caplog):
    img = np.random.default_rng(2).integers(0, 256, size=(20, 30), dtype=np.uint8)
    path = S.wrap_png_as_dicom(img, tmp_path / "p.dcm", margin=5)
    cine = S.write(S.make_dataset(np.zeros((3, 8, 8), np.uint8)), tmp_path / "c.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-300])
    mpeg = S.write(S.with_encapsulated(S.make_dataset(np.zeros((8, 8), np.uint8)), uid.MPEG2MPML),
                   tmp_path / "mpeg.dcm")
    assert S.FAKE_NAME in pydicom.dcmread(path).PatientName    # the file does hold them
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = D.read_frames(path) + D.read_frames(cine)
        assert_no_leak(frames)
        errors = []
        for p, kw in ((cine, {"frame": 9}), (cut, {}), (mpeg, {})):
            with pytest.raises(D.DicomError) as e:
                D.read_frames(p, **kw)
            errors.append(e.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [str(w.message) for w in caught]
    texts += [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if leaks(t)]
    assert set(vars(frames[0])) == {"rgb", "frame", "n_frames", "crop", "sop_instance_uid",
                                    "source", "photometric", "transfer_syntax", "notes"}


def test_identifying_elements_are_never_converted(tmp_path, caplog):
    """Converting a malformed value makes pydicom warn and log about it (some messages quote
    the value), so read_frames - error path included - must never convert those elements."""
    from pydicom import config
    from pydicom.dataelem import DataElement

    ds = S.make_dataset(np.zeros((32, 32), np.uint8))
    for tag, vr, value in ((0x00100010, "PN", S.FAKE_NAME + "^" + "x" * 70),
                           (0x00100020, "LO", S.FAKE_ID + "y" * 70),
                           (0x00080050, "SH", S.FAKE_ACCESSION + "-too-long")):
        ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    data = S.write(ds, tmp_path / "good.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-100])                                # decode fails -> message scrubbed
    with pytest.warns(UserWarning, match="exceeds"):            # converting them does warn ...
        assert pydicom.dcmread(cut).PatientID
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:        # ... read_frames never does
        warnings.simplefilter("always")
        assert_no_leak(D.read_frames(tmp_path / "good.dcm"))
        with pytest.raises(D.DicomError) as e:
            D.read_frames(cut)
    assert not leaks(str(e.value)) and "<redacted>" not in str(e.value)
    assert not caught and not [r for r in caplog.records if "exceeds" in r.getMessage()]


def test_scrub_removes_identifying_values():
    ds = S.make_dataset(np.zeros((2, 2), np.uint8))
    msg = D._scrub(f"bad value '{S.FAKE_NAME}' for {S.FAKE_ID}\nand Jane, {S.FAKE_ACCESSION}", ds)
    assert not leaks(msg) and "\n" not in msg and "<redacted>" in msg


def test_missing_pydicom_says_what_to_install(tmp_path, monkeypatch):
    path = S.write(S.make_dataset(np.zeros((4, 4), np.uint8)), tmp_path / "x.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)          # import pydicom -> ImportError
    assert D.is_dicom(path)                                      # detection needs no pydicom
    with pytest.raises(BusiError) as e:
        D.read_frames(path)
    assert 'pip install "busi-lite[dicom]"' in str(e.value)
    assert "pydicom" in str(e.value)


def test_old_pydicom_is_refused_with_the_fix(tmp_path, monkeypatch):
    path = S.write(S.make_dataset(np.zeros((4, 4), np.uint8)), tmp_path / "x.dcm")
    monkeypatch.setattr(pydicom, "__version__", "2.4.4")
    with pytest.raises(BusiError, match="pydicom >= 3, found 2.4.4"):
        D.read_frames(path)
