"""Uploaded bytes -> decoded RGB frames, in memory; nothing is written to disk.

Contract:

* :func:`sniff` names the kind of an upload from its first bytes (``png``, ``jpeg``,
  ``bmp``, ``tiff``, ``dicom``) or returns None (not an image busi-lite reads).
* :func:`decode` turns one upload into a list of :class:`Frame` (one per image; one
  per frame of a DICOM cine) or raises :class:`UploadError` with an HTTP status
  (415: not an image/DICOM, 400: broken or unsupported file) and a message naming the file.
* Images are decoded by ``busi_lite.io.imread.decode_rgb``, the decoder of ``read_rgb`` (same pixel
  limit, EXIF orientation, 16-bit scaling), so the web record equals ``predict --json``'s.
* DICOM goes through ``busi_lite.io.dicom`` (pydicom, when installed), decoded from memory.
  :func:`remove_stale_copies` deletes the ``/dev/shm/busi-lite-*.dcm`` temp copies older
  versions wrote (a killed server left them, patient data inside); ``serve`` calls it at start.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from busi_lite.common.errors import MAX_PIXELS, BusiError, ImageError, ImageTooLarge
from busi_lite.io.imread import decode_rgb
from busi_lite.serving import boxes

PREVIEW_SIDE = 640          # longest side of the preview JPEG sent to the page
PREVIEW_QUALITY = 85

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


class UploadError(BusiError):
    """An upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, what: str, fix: str, status: int, file: str | None = None):
        super().__init__(what, fix)
        self.status, self.file = status, file


@dataclass
class Frame:
    """One decoded picture of an upload.

    rgb: uint8 [H,W,3] (for DICOM: after the ultrasound-region crop, if any).
    extra: fields added to the prediction record (DICOM: frame, n_frames, sop_instance_uid, ...).
    """
    name: str
    rgb: np.ndarray
    extra: dict


def safe_name(filename: str | None, index: int) -> str:
    """The upload's base name (no client folders), printable, at most 200 characters."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:200] or f"upload{index + 1}"


def sniff(head: bytes) -> str | None:
    """First bytes of a file -> its kind, or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def dicom_available() -> bool:
    """Whether pydicom (the ``[dicom]`` extra) is installed."""
    return importlib.util.find_spec("pydicom") is not None


def declared_pixels(name: str, blob: bytes) -> int:
    """Pixels an upload will decode to, read from its header only (all frames of a DICOM);
    0 when the header cannot be read (:func:`decode` then names the problem)."""
    kind = sniff(blob[:132])
    try:
        if kind == "dicom":
            from busi_lite.io import dicom

            rows, cols, n_frames = dicom.read_size(name, data=blob)
            return rows * cols * n_frames
        if kind is not None:
            with Image.open(io.BytesIO(blob)) as im:
                return int(im.size[0]) * int(im.size[1])
    except Exception:  # noqa: BLE001 - any unreadable header: decode() reports it
        return 0
    return 0


def decode(name: str, blob: bytes, max_pixels: int = MAX_PIXELS) -> list[Frame]:
    """One upload -> frames (see module docstring); raises UploadError."""
    kind = sniff(blob[:132])
    if kind is None:
        raise UploadError(f"{name}: not an image or DICOM file", "upload PNG, JPEG, BMP, TIFF or DICOM files",
                          415, name)
    if kind == "dicom":
        return _decode_dicom(name, blob)
    try:
        rgb = decode_rgb(io.BytesIO(blob), name, max_pixels)
    except ImageTooLarge as e:
        raise UploadError(e.what, e.fix, 413, name) from e
    except ImageError as e:
        raise UploadError(f"looks like {kind.upper()}: {e.what}", e.fix, 400, name) from e
    return [Frame(name, rgb, {})]


def _decode_dicom(name: str, blob: bytes) -> list[Frame]:
    try:
        from busi_lite.io import dicom
    except ImportError as e:
        raise UploadError(f"{name}: DICOM file, but DICOM support is not installed ({e})",
                          'pip install "busi-lite[dicom]" and restart the server', 415, name) from e
    try:
        frames = dicom.read_frames(name, data=blob)       # from memory: nothing is written to disk
    except BusiError as e:
        what = e.what if e.what.startswith(name) else f"{name}: {e.what}"
        raise UploadError(what, e.fix or "check the DICOM file", 400, name) from e
    except Exception as e:  # pydicom raises many types for damaged files
        raise UploadError(f"{name}: DICOM file cannot be decoded ({type(e).__name__}: {str(e)[:300]})",
                          "check the file is complete, or export it uncompressed", 400, name) from e
    out = []
    for fr in frames:
        extra = {"frame": int(fr.frame), "n_frames": int(fr.n_frames)}
        if fr.sop_instance_uid is not None:
            extra["sop_instance_uid"] = fr.sop_instance_uid
        if fr.crop is not None:
            extra["dicom_crop"] = [int(v) for v in fr.crop]
        if fr.notes:
            extra["notes"] = list(fr.notes)
        out.append(Frame(name, fr.rgb, extra))
    return out


def remove_stale_copies(folder: str = "/dev/shm") -> list[str]:
    """Delete this user's ``busi-lite-*.dcm`` upload copies left in ``folder``; -> names removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith("busi-lite-") and e.name.endswith(".dcm")):
            continue
        try:
            if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_uid == os.getuid():
                os.unlink(e.path)
                removed.append(e.name)
        except OSError:
            pass
    return removed


def preview(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> str:
    """A JPEG data URL of ``rgb`` [H,W,3] scaled so its longest side is at most ``side``."""
    im = Image.fromarray(rgb)
    im.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=PREVIEW_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_box(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (original pixels) -> the box clamped to the image, by the CLI's rule
    (busi_lite.serving.boxes.parse_box); raises UploadError (400) with its message."""
    if len(text) > 200:
        raise UploadError(f"box={text[:60]!r}... is {len(text)} characters long", "send box as x0,y0,x1,y1", 400)
    try:
        return boxes.parse_box(text, size[0], size[1], "box")
    except boxes.BoxError as e:
        raise UploadError(e.what, e.fix, 400) from None
