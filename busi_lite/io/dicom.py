"""DICOM decoding: ultrasound files -> RGB uint8 frames, nothing identifying kept.

Contract
- :func:`is_dicom` says whether a path should go through this module: a regular
  file named ``*.dcm`` / ``*.dicom``, or any regular file with ``DICM`` at byte 128
  (reads at most 132 bytes).
- :func:`read_frames` decodes every frame (or one, ``frame`` 0-based) to
  :class:`DicomFrame` records; :func:`read_dicom_rgb` returns the first frame's
  RGB array. Every failure is a :class:`DicomError` naming the file.
- Privacy: the record holds only pixels, frame index/count, crop, SOP Instance
  UID, the file path, the photometric interpretation and the transfer syntax
  name. No patient/study attribute is copied, and error messages are built from
  the path, sizes and syntax names only (a decoder's own message is scrubbed of
  every identifying value the header holds). pydicom's warnings (which can quote
  element values) are silenced while a file is read.
- pydicom (>= 3) is an optional extra, imported lazily: without it every reader
  raises a BusiError saying ``pip install "busi-lite[dicom]"``. JPEG baseline /
  extended and JPEG 2000 decode through Pillow (a core dependency); RLE and the
  uncompressed syntaxes through pydicom itself. Other syntaxes need a pydicom
  plugin; the error names the syntax and what to install.

Pixels, in this order
1. Ultrasound regions: the union box of every ``SequenceOfUltrasoundRegions``
   item whose ``RegionSpatialFormat`` is 1 (2D tissue image). Several 2D regions
   (e.g. a dual view) give one box covering all of them. The box is in frame
   pixels, ``(x0, y0, x1, y1)`` half-open (DICOM's Max X1/Y1 are inclusive, +1
   here), clamped to the frame; it is ``None`` when there is no 2D region or the
   clamped box is empty (then the whole frame is used).
2. Colour: MONOCHROME2 as is, MONOCHROME1 inverted, RGB as is, YBR_FULL /
   YBR_FULL_422 converted with pydicom's ``convert_color_space`` (JPEG 2000's
   YBR_RCT/ICT come out of the decoder as RGB already), PALETTE COLOR through
   its LUT (16-bit LUT entries keep their top 8 bits).
3. Depth: integers are scaled linearly from the stored range
   ``[0, 2**BitsStored - 1]`` (signed data shifted by ``2**(BitsStored-1)``)
   to ``[0, 255]``; 8-bit unsigned data is passed through bit-exact. Rescale
   slope/intercept and VOI windows are NOT applied: ultrasound pixel values are
   already display brightness (the US IODs carry no Modality LUT), and the
   models were trained on screen pixels (BUSI/BUS-BRA PNGs).

Limits (checked on the header, before the pixel data is read): a frame over
``data.MAX_PIXELS`` pixels, a file declaring more than ``MAX_TOTAL_PIXELS``
pixels over all its frames, or a file over ``MAX_FILE_BYTES`` is refused.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from busi_lite.common.errors import MAX_PIXELS, BusiError, ConfigError, ImageError

DICOM_SUFFIXES = {".dcm", ".dicom"}  # file suffixes read as DICOM (any file with the DICM preamble is too)

MAX_TOTAL_PIXELS = 100_000_000      # Rows*Columns*frames over the whole file
MAX_FILE_BYTES = 1 << 30            # 1 GiB
INSTALL = 'pip install "busi-lite[dicom]"'

# Attributes whose values are scrubbed from any decoder message we pass on.
_IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "IssuerOfPatientID", "AccessionNumber", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy", "StudyDate",
    "StudyTime", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyID", "StationName",
    "DeviceSerialNumber", "StudyInstanceUID", "SeriesInstanceUID",
)


class DicomError(ImageError, BusiError):
    """A DICOM file cannot be used; names the file, never a patient attribute.

    Also an ``ImageError``, so callers that skip unreadable images skip it too.
    """


@dataclass(frozen=True, eq=False)
class DicomFrame:
    """One decoded frame. ``rgb``: uint8 [H, W, 3], already cropped to ``crop``."""

    rgb: np.ndarray = field(repr=False)
    frame: int                                   # 0-based index in the file
    n_frames: int                                # frames in the file
    crop: tuple[int, int, int, int] | None       # (x0, y0, x1, y1) half-open, frame pixels
    sop_instance_uid: str | None
    source: str                                  # the file path
    photometric: str                             # as declared in the file
    transfer_syntax: str                         # its name, e.g. "JPEG Baseline (Process 1)"


# ---------------------------------------------------------------- detection

def is_dicom(path) -> bool:
    """True for a regular file named ``*.dcm``/``*.dicom`` or with ``DICM`` at byte 128."""
    p = Path(path)
    try:
        # non-blocking open + fstat: a FIFO or device is never read from
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        if p.suffix.lower() in DICOM_SUFFIXES:
            return True
        head = os.pread(fd, 132, 0) if hasattr(os, "pread") else os.read(fd, 132)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(head) == 132 and head[128:132] == b"DICM"


def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise BusiError("reading DICOM needs pydicom", INSTALL) from e
    major = str(getattr(pydicom, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 3:
        raise BusiError(f"reading DICOM needs pydicom >= 3, found {pydicom.__version__}",
                        f'{INSTALL} (or pip install -U "pydicom>=3")')
    return pydicom


# ---------------------------------------------------------------- reading

def read_dicom_rgb(path) -> np.ndarray:
    """The first (or only) frame as RGB uint8 [H, W, 3], cropped to the 2D region."""
    return read_frames(path, frame=0)[0].rgb


def read_frames(path, frame: int | None = None) -> list[DicomFrame]:
    """Decode all frames of a DICOM file, or only ``frame`` (0-based).

    Returns a list of :class:`DicomFrame` (length 1 when ``frame`` is given).
    Raises DicomError naming the file (never a patient attribute).
    """
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))):
        raise ConfigError(f"frame must be a frame index (int, 0-based) or None, got {frame!r}",
                          "give a whole number", param="frame")
    pydicom = _pydicom()
    path = Path(path)
    src = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise DicomError(f"{src}: cannot be opened ({e.strerror})", "check the path") from e
    if not stat.S_ISREG(st.st_mode):
        raise DicomError(f"{src}: is not a regular file", "give a DICOM file")
    if st.st_size > MAX_FILE_BYTES:
        raise DicomError(f"{src}: {st.st_size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit",
                         "export fewer frames or a single frame")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = _read(pydicom, path, stop_before_pixels=True)
        rows, cols, n_frames, ts = _check_header(head, src)
        if frame is not None and not 0 <= int(frame) < n_frames:
            raise DicomError(f"{src}: frame {int(frame)} is out of range, the file has {n_frames} "
                             f"frame{'s' if n_frames != 1 else ''}",
                             f"give a frame from 0 to {n_frames - 1}")
        ds = _read(pydicom, path, stop_before_pixels=False)
        if "PixelData" not in ds:
            raise DicomError(f"{src}: holds no pixel data (e.g. a DICOMDIR or a report)",
                             "give an image DICOM file")
        decoder = _decoder(pydicom, ts, src)
        crop = region_box(ds, rows, cols)
        indices = list(range(n_frames)) if frame is None else [int(frame)]
        declared_pi = str(ds.get("PhotometricInterpretation", "")).strip()
        uid = ds.get("SOPInstanceUID")
        uid = str(uid) if uid else None
        out = []
        try:
            for i, (arr, meta) in zip(indices, decoder.iter_array(ds, indices=indices, as_rgb=False)):
                if crop is not None:
                    arr = arr[crop[1]:crop[3], crop[0]:crop[2]]
                rgb = _to_rgb8(arr, meta, ds, src)
                out.append(DicomFrame(np.ascontiguousarray(rgb), i, n_frames, crop, uid, src,
                                      declared_pi, ts.name))
        except DicomError:
            raise
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted file: any decoder failure names it
            raise DicomError(f"{src}: pixel data cannot be decoded ({ts.name}: "
                             f"{type(e).__name__}: {_scrub(str(e), ds)})",
                             "check the file is complete; re-export it from the scanner or PACS") from None
    return out


def _read(pydicom, path: Path, stop_before_pixels: bool):
    src = str(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        raise DicomError(f"{src}: is not a DICOM file (no 'DICM' file header)",
                         "give a DICOM Part 10 file, or rename it if it is a PNG/JPEG") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated / corrupt header, whatever pydicom raises
        raise DicomError(f"{src}: DICOM header cannot be read ({type(e).__name__})",
                         "the file may be truncated or corrupt; copy it again") from None


def _check_header(ds, src: str):
    """-> rows, cols, n_frames, transfer syntax UID; refuses oversized declarations."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not ts:
        raise DicomError(f"{src}: has no transfer syntax in its file header (truncated, or not "
                         "a DICOM Part 10 file)", "copy it again or re-export it as a DICOM Part 10 file")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        raise DicomError(f"{src}: holds no image (Rows/Columns/NumberOfFrames missing or invalid; "
                         "the file may be truncated)", "give a complete image DICOM file") from None
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise DicomError(f"{src}: declares an empty image ({cols}x{rows}, {n_frames} frames)",
                         "give an image DICOM file")
    if rows * cols > MAX_PIXELS:
        raise DicomError(f"{src}: a {cols}x{rows} frame is over the {MAX_PIXELS:,}-pixel limit "
                         "(possible decompression bomb)", "downscale or re-export the image")
    if rows * cols * n_frames > MAX_TOTAL_PIXELS:
        raise DicomError(f"{src}: {n_frames} frames of {cols}x{rows} is over the "
                         f"{MAX_TOTAL_PIXELS:,}-pixel limit for one file",
                         "export a shorter clip or single frames")
    return rows, cols, n_frames, ts


def _decoder(pydicom, ts, src: str):
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(ts)
    except NotImplementedError:
        raise DicomError(f"{src}: transfer syntax '{ts.name}' is not supported",
                         "re-export it uncompressed, JPEG baseline or JPEG 2000") from None
    if not dec.is_available:
        # pydicom says e.g. "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
        opts = [m.split(" - requires ", 1)[-1].replace("numpy and ", "").replace(" and ", " ")
                for m in dec.missing_dependencies]
        opts.sort(key=lambda o: not o.startswith("pylibjpeg"))     # the pip-only option first
        fix = (f"pip install {opts[0]}" + (f" (or: {'; '.join(opts[1:])})" if opts[1:] else "")
               if opts else "re-export it uncompressed, JPEG baseline or JPEG 2000")
        raise DicomError(f"{src}: no decoder installed for transfer syntax '{ts.name}'", fix)
    return dec


def region_box(ds, rows: int, cols: int):
    """Union box of the 2D ultrasound regions, half-open and clamped; None when none."""
    box = None
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            if int(r.RegionSpatialFormat) != 1:
                continue
            b = (int(r.RegionLocationMinX0), int(r.RegionLocationMinY0),
                 int(r.RegionLocationMaxX1) + 1, int(r.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue                    # an incomplete region item is ignored
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]),
                                     max(box[2], b[2]), max(box[3], b[3]))
    if box is None:
        return None
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(cols, box[2]), min(rows, box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _to_rgb8(arr: np.ndarray, meta: dict, ds, src: str) -> np.ndarray:
    """Decoded frame [H,W] or [H,W,3] -> RGB uint8 [H,W,3] (see the module docstring)."""
    from pydicom.pixels import apply_color_lut, convert_color_space

    pi = str(meta.get("photometric_interpretation", "")).strip()
    if arr.dtype.kind not in "ui":
        raise DicomError(f"{src}: float pixel data is not supported", "give an integer-valued image")
    bits = int(meta.get("bits_stored") or arr.dtype.itemsize * 8)
    signed = int(meta.get("pixel_representation") or 0) == 1
    if pi in ("MONOCHROME1", "MONOCHROME2"):
        g = _scale(arr if arr.ndim == 2 else arr[..., 0], bits, signed)
        if pi == "MONOCHROME1":
            g = 255 - g
        return np.repeat(g[..., None], 3, axis=2)
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype == np.uint8:
            return rgb
        if _lut_max(apply_color_lut, ds) <= 255:    # 8-bit values in 16-bit entries (a common slip)
            return rgb.astype(np.uint8)
        return (rgb >> 8).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DicomError(f"{src}: {pi} data with shape {arr.shape} is not a 3-sample image",
                         "re-export the file")
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        if bits != 8 or signed:
            raise DicomError(f"{src}: {pi} with {bits}-bit samples is not supported",
                             "re-export it as 8-bit RGB")
        return convert_color_space(arr, pi, "RGB")
    if pi == "RGB":
        return _scale(arr, bits, signed)
    raise DicomError(f"{src}: photometric interpretation '{pi}' is not supported",
                     "re-export it as MONOCHROME2, RGB, YBR_FULL or PALETTE COLOR")


def _scale(a: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Stored range [0, 2**bits-1] (signed: shifted) -> uint8 [0, 255]; 8-bit unsigned is exact."""
    if bits == 8 and not signed and a.dtype == np.uint8:
        return a
    x = a.astype(np.float64)
    if signed:
        x = x + 2.0 ** (bits - 1)
    x = np.round(x * (255.0 / (2.0 ** bits - 1)))
    return np.clip(x, 0, 255).astype(np.uint8)


def _lut_max(apply_color_lut, ds) -> int:
    """Largest value over all palette entries (65535 when the LUT cannot be enumerated)."""
    try:
        desc = ds.RedPaletteColorLookupTableDescriptor
        n, first = int(desc[0]) or 65536, int(desc[1])
        idx = np.arange(max(first, 0), min(first + n, 65536), dtype=np.uint16)
        return int(apply_color_lut(idx, ds).max())
    except (AttributeError, TypeError, ValueError, IndexError):
        return 65535


def _scrub(text: str, ds) -> str:
    """``text`` on one line, every identifying value of ``ds`` replaced, cut to 200 characters.

    Reads the identifying elements' raw bytes: converting them would make pydicom
    validate them and log any malformed value (i.e. the very value to hide).
    """
    values = set()
    for kw in _IDENTIFYING:
        try:
            elem = ds.get_item(kw)
        except (KeyError, ValueError, TypeError):
            continue
        raw = getattr(elem, "value", None)
        if raw is None:
            continue
        if isinstance(raw, bytes):                      # not converted yet (read from a file)
            texts = {raw.decode("utf-8", "replace"), raw.decode("latin-1")}
        elif isinstance(raw, (list, tuple, MutableSequence)):   # a converted multi-value
            texts = {str(x) for x in raw}
        else:                                           # str, PersonName, date ...
            texts = {str(raw)}
        for t in texts:
            t = t.strip(" \0")
            values.add(t)                               # the whole value, then its parts
            values.update(re.split(r"[\\^=]", t))
    for v in sorted(values, key=len, reverse=True):
        v = v.strip(" \0")
        if len(v) >= 2:
            text = text.replace(v, "<redacted>")
    return " ".join(text.split())[:200]
