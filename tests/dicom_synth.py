"""Synthetic ultrasound DICOM files for tests (needs pydicom >= 3).

Every file carries a fake patient (``FAKE_NAME`` / ``FAKE_ID`` and friends) so
tests can check that nothing identifying leaks out of busi_lite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FAKE_NAME = "Doe^Jane"
FAKE_ID = "SECRET123"
FAKE_BIRTH = "19700101"
FAKE_ACCESSION = "ACC987654"
FAKE_INSTITUTION = "Hospital Of Secrets"
FAKE_VALUES = (FAKE_NAME, FAKE_ID, FAKE_BIRTH, FAKE_ACCESSION, FAKE_INSTITUTION, "Doe", "Jane")

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"          # Ultrasound Image Storage
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"     # Ultrasound Multi-frame Image Storage


def region_item(x0: int, y0: int, x1: int, y1: int, spatial_format: int = 1):
    """One SequenceOfUltrasoundRegions item; (x0, y0, x1, y1) half-open pixel box."""
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat = spatial_format       # 1 = 2D tissue, 3 = spectral, 4 = waveform ...
    r.RegionDataType = 1 if spatial_format == 1 else 3
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = int(x0), int(y0)
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = int(x1) - 1, int(y1) - 1   # inclusive in DICOM
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3                 # cm
    r.PhysicalDeltaX = r.PhysicalDeltaY = 0.01
    return r


def make_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 8,
                 regions=(), patient_name: str = FAKE_NAME, patient_id: str = FAKE_ID):
    """A FileDataset (explicit VR little endian, US SOP class) holding ``pixels``.

    ``pixels``: [H,W] / [H,W,3] one frame, or [F,H,W] / [F,H,W,3] (F > 1) a cine.
    ``regions``: items from :func:`region_item`.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    multi = pixels.ndim == 4 or (pixels.ndim == 3 and photometric.startswith("MONO"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME if multi else US_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.AccessionNumber = FAKE_BIRTH, FAKE_ACCESSION
    ds.InstitutionName, ds.ReferringPhysicianName = FAKE_INSTITUTION, "Who^Doctor"
    ds.StudyDate = "20240102"
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    if regions:
        ds.SequenceOfUltrasoundRegions = list(regions)
    return ds


def write(ds, path) -> Path:
    """Save ``ds`` as a DICOM Part 10 file (128-byte preamble, 'DICM', file meta)."""
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def with_encapsulated(ds, transfer_syntax: str, fragment: bytes = b"\xff\xd8" + b"\0" * 62):
    """``ds`` re-labelled as ``transfer_syntax`` with one (junk) compressed fragment per frame."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    n = int(ds.get("NumberOfFrames") or 1)
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.PixelData = encapsulate([fragment] * n)
    ds["PixelData"].VR = "OB"
    return ds


def _scanner_ui(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A canvas that looks like scanner chrome: bright bars and 'text' blocks on grey noise."""
    rng = np.random.default_rng(seed)
    c = rng.integers(20, 60, size=(h, w), dtype=np.uint8)
    c[: max(1, h // 20)] = 230                       # top menu bar
    c[::17, ::5] = 255                               # dotted 'text'
    return c if channels == 1 else np.repeat(c[..., None], 3, axis=2)


def wrap_png_as_dicom(image: np.ndarray, path, region=None, margin: int = 0,
                      patient_name: str = FAKE_NAME, patient_id: str = FAKE_ID,
                      photometric: str | None = None) -> Path:
    """Wrap an 8-bit grey [H,W] or RGB [H,W,3] image in an ultrasound DICOM.

    - ``margin`` > 0: the image is placed in a larger frame of fake scanner UI,
      ``margin`` pixels on every side, with a 2D region on exactly the image (plus
      a waveform region in the bottom margin, which must be ignored), so
      ``read_frames(path)[0].rgb`` equals the image, bit-exact.
    - ``region`` = (x0, y0, x1, y1), half-open in the image's own pixels: the 2D
      region is that box instead (read back: ``image[y0:y1, x0:x1]``).
    - neither: no region; the frame is the image.
    Grey comes back with 3 equal channels, as ``data.read_rgb`` gives for grey PNGs.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"image must be uint8 [H,W] or [H,W,3], got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    m = int(margin)
    canvas = _scanner_ui(h + 2 * m, w + 2 * m, 1 if a.ndim == 2 else 3)
    canvas[m:m + h, m:m + w] = a
    regions = []
    if region is not None:
        x0, y0, x1, y1 = region
        regions.append(region_item(x0 + m, y0 + m, x1 + m, y1 + m))
    elif m > 0:
        regions.append(region_item(m, m, m + w, m + h))
    if m >= 4 and regions:
        regions.append(region_item(m, h + m, w + m, h + 2 * m, spatial_format=4))
    pi = photometric or ("MONOCHROME2" if a.ndim == 2 else "RGB")
    ds = make_dataset(canvas, pi, 8, regions, patient_name=patient_name, patient_id=patient_id)
    return write(ds, path)
