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
pixels over all its frames, or a file over ``MAX_FILE_BYTES`` is refused. Native
PixelData longer than Rows x Columns x frames x samples x bits is refused before it
is read; Deflated files are inflated here with that size (plus 1 MiB) as the cap.
A SOP Instance UID that is not a UID (digits and dots) is left out.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from busi_lite.common.errors import MAX_PIXELS, BusiError, ConfigError, ImageError

DICOM_SUFFIXES = {".dcm", ".dicom"}  # file suffixes read as DICOM (any file with the DICM preamble is too)

MAX_TOTAL_PIXELS = 100_000_000      # Rows*Columns*frames over the whole file
MAX_FILE_BYTES = 1 << 30            # 1 GiB
INSTALL = 'pip install "busi-lite[dicom]"'
_DEFLATED, _EXPLICIT = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.1"
_DEFLATE_HEAD = 1 << 20             # inflated bytes read before the header must have been seen
_DEFLATE_SLACK = 1 << 20            # trailing elements allowed after the pixel data
_DEFER = 1 << 16                    # values over 64 KiB are read only when used
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

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
    notes: tuple = ()                            # e.g. an unusable ultrasound region (whole frame used)


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


def read_frames(path, frame: int | None = None, *, data: bytes | None = None) -> list[DicomFrame]:
    """Decode all frames of a DICOM file, or only ``frame`` (0-based).

    ``data``: the file's bytes, decoded from memory (nothing written to disk); ``path`` is
    then only the name used in messages and records. Returns a list of :class:`DicomFrame`
    (length 1 when ``frame`` is given). Raises DicomError naming the file (never a patient
    attribute).
    """
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))):
        raise ConfigError(f"frame must be a frame index (int, 0-based) or None, got {frame!r}",
                          "give a whole number", param="frame")
    pydicom = _pydicom()
    src = str(path)
    blob = _file_bytes(Path(path), src) if data is None else data
    if len(blob) > MAX_FILE_BYTES:
        raise DicomError(f"{src}: {len(blob):,} bytes is over the {MAX_FILE_BYTES:,}-byte limit",
                         "export fewer frames or a single frame")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp, syntax_name = _stream(pydicom, blob, src)
        del blob
        head = _read(pydicom, fp, src, stop_before_pixels=True)
        rows, cols, n_frames, ts = _check_header(head, src)
        if frame is not None and not 0 <= int(frame) < n_frames:
            raise DicomError(f"{src}: frame {int(frame)} is out of range, the file has {n_frames} "
                             f"frame{'s' if n_frames != 1 else ''}",
                             f"give a frame from 0 to {n_frames - 1}")
        ds = _read(pydicom, fp, src, stop_before_pixels=False, defer=True)
        if "PixelData" not in ds:
            raise DicomError(f"{src}: holds no pixel data (e.g. a DICOMDIR or a report)",
                             "give an image DICOM file")
        _check_pixel_length(ds, ts, src)
        decoder = _decoder(pydicom, ts, src)
        crop, region_note = region_crop(ds, rows, cols)
        indices = list(range(n_frames)) if frame is None else [int(frame)]
        declared_pi = str(ds.get("PhotometricInterpretation", "")).strip()
        uid = valid_uid(ds.get("SOPInstanceUID"))
        out = []
        try:
            for i, (arr, meta) in zip(indices, decoder.iter_array(ds, indices=indices, as_rgb=False)):
                if crop is not None:
                    arr = arr[crop[1]:crop[3], crop[0]:crop[2]]
                rgb = _to_rgb8(arr, meta, ds, src)
                out.append(DicomFrame(np.ascontiguousarray(rgb), i, n_frames, crop, uid, src,
                                      declared_pi, syntax_name, (region_note,) if region_note else ()))
        except DicomError:
            raise
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted file: any decoder failure names it
            raise DicomError(f"{src}: pixel data cannot be decoded ({syntax_name}: "
                             f"{type(e).__name__}: {_scrub(str(e), ds)})",
                             "check the file is complete; re-export it from the scanner or PACS") from None
    return out


def read_size(path, *, data: bytes | None = None) -> tuple[int, int, int]:
    """(Rows, Columns, frames) from the header only; refuses what :func:`read_frames` refuses there."""
    pydicom = _pydicom()
    src = str(path)
    blob = _file_bytes(Path(path), src) if data is None else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp, _ = _stream(pydicom, blob, src)
        rows, cols, n_frames, _ = _check_header(_read(pydicom, fp, src, stop_before_pixels=True), src)
    return rows, cols, n_frames


def valid_uid(value) -> str | None:
    """A DICOM UID (digits and dots, at most 64 characters) as text, else None (never echoed)."""
    text = str(value).strip(" \0") if value is not None else ""
    return text if len(text) <= 64 and _UID.fullmatch(text) else None


def _file_bytes(path: Path, src: str) -> bytes:
    """The whole file (regular files up to MAX_FILE_BYTES only)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))   # a FIFO never blocks
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DicomError(f"{src}: is not a regular file", "give a DICOM file")
            if st.st_size > MAX_FILE_BYTES:
                raise DicomError(f"{src}: {st.st_size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit",
                                 "export fewer frames or a single frame")
            return f.read()
    except OSError as e:
        raise DicomError(f"{src}: cannot be opened ({e.strerror or e})", "check the path") from e


def _meta(blob: bytes):
    """Walk the Part 10 file meta group (explicit VR little endian after the 132-byte preamble).
    -> (offset where the data set starts, (start, length) of the TransferSyntaxUID value or None)."""
    pos, ts = 132, None
    while pos + 8 <= len(blob):
        group, elem = struct.unpack_from("<HH", blob, pos)
        if group != 0x0002:
            break
        if blob[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(blob):
                break
            length, start = struct.unpack_from("<I", blob, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", blob, pos + 6)[0], pos + 8
        if elem == 0x0010:
            ts = (start, length)
        pos = start + length
    return pos, ts


def _stream(pydicom, blob: bytes, src: str):
    """-> (seekable stream pydicom reads, transfer syntax name). A Deflated file is inflated here,
    with a cap (its header's Rows x Columns x frames x samples x bits plus slack), and handed on
    as Explicit VR Little Endian (the same UID length, NUL-padded): pydicom would inflate it whole."""
    import io

    from pydicom.uid import UID

    end, ts = _meta(blob)
    uid = blob[ts[0]:ts[0] + ts[1]].decode("ascii", "replace").strip(" \0") if ts else ""
    if uid != _DEFLATED or ts[1] < len(_EXPLICIT):
        return io.BytesIO(blob), UID(uid).name if uid else "unknown"
    meta = bytearray(blob[:end])
    meta[ts[0]:ts[0] + ts[1]] = _EXPLICIT.encode("ascii").ljust(ts[1], b"\0")
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = bytearray(z.decompress(blob[end:], _DEFLATE_HEAD))
        tail = z.unconsumed_tail
        if not z.eof:
            head = _read(pydicom, io.BytesIO(bytes(meta) + bytes(body)), src, stop_before_pixels=True)
            if b"\xe0\x7f\x10\x00" not in body:
                raise DicomError(f"{src}: Deflated header is over {_DEFLATE_HEAD:,} bytes once inflated",
                                 "re-export the file uncompressed")
            cap = len(body) + _pixel_bytes(head, src) + _DEFLATE_SLACK
            while not z.eof and len(body) <= cap:
                chunk = z.decompress(tail, min(cap + 1 - len(body), 1 << 24))
                tail = z.unconsumed_tail
                if not chunk and not tail:
                    body += z.flush()
                    break
                body += chunk
            if len(body) > cap:
                raise DicomError(f"{src}: Deflated data inflates past the {cap:,} bytes its header "
                                 "declares (Rows x Columns x frames x samples x bits; possible "
                                 "decompression bomb)", "re-export the file")
    except zlib.error as e:
        raise DicomError(f"{src}: Deflated data cannot be inflated ({e})",
                         "the file may be truncated or corrupt; copy it again") from None
    meta += body
    return io.BytesIO(bytes(meta)), UID(_DEFLATED).name


def _pixel_bytes(ds, src: str) -> int:
    """Rows x Columns x frames x samples x bits allocated / 8 (bytes), from the header."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (AttributeError, TypeError, ValueError):
        raise DicomError(f"{src}: holds no image (Rows/Columns/NumberOfFrames missing or invalid; "
                         "the file may be truncated)", "give a complete image DICOM file") from None
    if min(rows, cols, frames, samples, bits) <= 0 or samples > 4 or bits > 64:
        raise DicomError(f"{src}: declares an impossible image ({cols}x{rows}, {frames} frames, "
                         f"{samples} samples, {bits} bits)", "give an image DICOM file")
    return (rows * cols * frames * samples * bits + 7) // 8


def _check_pixel_length(ds, ts, src: str) -> None:
    """Native (uncompressed) PixelData longer than the header declares is refused before it is read."""
    if ts.is_compressed:
        return
    elem = ds.get_item("PixelData")
    length = getattr(elem, "length", None)
    if length is None:
        value = getattr(elem, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    want = _pixel_bytes(ds, src)
    if length is not None and length != 0xFFFFFFFF and length > want + 1:      # +1: even-length padding
        raise DicomError(f"{src}: PixelData holds {length:,} bytes, its header declares {want:,} "
                         "(Rows x Columns x frames x samples x bits)", "re-export the file")


def _read(pydicom, fp, src: str, stop_before_pixels: bool, defer: bool = False):
    """One parse of the stream ``fp`` (rewound first). ``defer``: large values (the pixel data)
    are read only when used, so their declared length can be checked first."""
    fp.seek(0)
    try:
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, defer_size=_DEFER if defer else None)
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


MIN_REGION = 8    # px: a 2D region narrower or shorter than this is not used (whole frame instead)


def region_box(ds, rows: int, cols: int):
    """Union box of the 2D ultrasound regions, half-open and clamped; None when none is usable."""
    return region_crop(ds, rows, cols)[0]


def region_crop(ds, rows: int, cols: int):
    """(box or None, note or None): the union box of the usable 2D regions, half-open and clamped.
    A 2D region that is incomplete, inverted, outside the frame or under MIN_REGION pixels is not
    used, and the note says so (the whole frame is then used when no region is left)."""
    box, bad = None, []
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            if int(r.RegionSpatialFormat) != 1:
                continue
            b = (int(r.RegionLocationMinX0), int(r.RegionLocationMinY0),
                 int(r.RegionLocationMaxX1) + 1, int(r.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            bad.append("incomplete")
            continue
        if b[2] <= b[0] or b[3] <= b[1]:
            bad.append(f"inverted ({b[0]},{b[1]})-({b[2]},{b[3]})")
            continue
        c = (max(0, b[0]), max(0, b[1]), min(cols, b[2]), min(rows, b[3]))
        if c[2] - c[0] < MIN_REGION or c[3] - c[1] < MIN_REGION:
            where = "outside" if c[2] <= c[0] or c[3] <= c[1] else f"under {MIN_REGION} px inside"
            bad.append(f"({b[0]},{b[1]})-({b[2]},{b[3]}) {where} the {cols}x{rows} frame")
            continue
        box = c if box is None else (min(box[0], c[0]), min(box[1], c[1]), max(box[2], c[2]), max(box[3], c[3]))
    if not bad:
        return box, None
    used = "the other 2D region(s) used" if box is not None else "the whole frame used"
    return box, f"ultrasound region not used ({'; '.join(bad)}): {used}"


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
