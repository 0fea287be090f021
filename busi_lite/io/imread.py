"""Reading image files safely: regular files only, a pixel limit, any mode -> RGB uint8.

Contracts: only regular files are opened (a FIFO never blocks, a dangling or
looping symlink is a named error); images over MAX_PIXELS are refused before
decoding (decompression bombs); every failure is an :class:`ImageError`
naming the file, never a decoder's own exception. Nothing here writes.

DICOM: :func:`read_rgb` reads a DICOM file (``busi_lite.io.dicom.is_dicom``: ``*.dcm``/
``*.dicom`` or the ``DICM`` preamble, whatever the name) as ONE image, for datasets:
a single-frame file gives its frame, cropped to the ultrasound 2D region
(``dicom.read_frames``). A multi-frame (cine) file is refused with a named
ImageError: a dataset row is one image with one label and one mask, and picking
a frame silently would hide which one was used -> export the frame as its own
file. (``predict`` reads every frame of a cine through ``dicom.read_frames``.)
pydicom missing -> an ImageError naming the file with the install hint, so a
dataset's other files are still processed. Messages carry the file path only,
never a patient attribute. pydicom itself is imported only when a DICOM file is read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from busi_lite.common.errors import MAX_PIXELS, BusiError, ImageError, ImageTooLarge
from busi_lite.io import dicom


def open_regular(path):
    """Open ``path`` for binary reading, only if it is a regular file (symlinks followed).

    Never blocks on a FIFO or device (opened non-blocking, then checked with
    fstat). Raises ImageError naming the file on a dangling symlink, a symlink
    loop, a missing or unreadable file, or anything that is not a regular file.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ImageError(f"{path}: cannot be opened ({os_reason(path, e)})",
                         "fix or remove the file (check the link target and permissions)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path}: not a regular file ({file_kind(st.st_mode)})",
                             "remove it or replace it with the image file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def os_reason(path: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT and path.is_symlink():
        return "dangling symlink"
    return e.strerror or str(e)


def file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"



# ---------------------------------------------------------------- decoding

def read_rgb(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any supported image to RGB uint8 [H,W,3], EXIF orientation applied.

    Alpha is composited on black, palette/grayscale/CMYK converted. 16-bit
    grey is scaled by its bit depth, judged from its maximum: a maximum
    <= 4095 is 12-bit data (x * 255 / 4095), otherwise 16-bit (x * 255 / 65535,
    i.e. x / 257). Only regular files are read; images over ``max_pixels`` are
    refused before decoding. A DICOM file is read by :func:`read_dicom_image`
    (one frame, region-cropped; a cine is refused). Raises ImageError naming the file.
    """
    path = Path(path)
    if dicom.is_dicom(path):
        return read_dicom_image(path, max_pixels)
    with open_regular(path) as fh:
        return decode_rgb(fh, path, max_pixels)


def decode_rgb(fh, name, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An open binary file object (a file, ``io.BytesIO``) of a PNG/JPEG/BMP/TIFF -> RGB uint8 [H,W,3].

    The decoding of :func:`read_rgb` (pixel limit, EXIF orientation, 16-bit scaling)
    for bytes that are not a path, e.g. a web upload. ``name`` names the image in
    messages. Raises :class:`ImageTooLarge` over ``max_pixels``, ImageError otherwise.
    """
    try:
        with open_image(fh) as im:
            _check_pixels(name, im, max_pixels)
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:
        why = str(e).replace(repr(fh), "it")          # PIL names the stream: <_io.BytesIO object at 0x...>
        raise ImageError(f"{name}: cannot be read as an image ({why})",
                         "check the file is a complete PNG/JPEG/BMP/TIFF, re-export it") from None


def read_dicom_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A single-frame DICOM file -> RGB uint8 [H,W,3], the frame cropped to its 2D ultrasound region.

    Raises ImageError (a DicomError for decoding failures) naming the file: a
    multi-frame cine, pydicom missing, a cropped image over ``max_pixels``.
    """
    path = Path(path)
    try:
        f = dicom.read_frames(path, frame=0)[0]
    except ImageError:
        raise
    except BusiError as e:  # pydicom missing or too old: this file fails, the others run
        raise ImageError(f"{path}: a DICOM file; {e.what}", e.fix or dicom.INSTALL) from None
    if f.n_frames > 1:
        raise ImageError(f"{path}: a {f.n_frames}-frame cine; datasets take one image per file",
                         "export the frame you want as its own file")
    h, w = f.rgb.shape[:2]
    if w * h > max_pixels:
        raise ImageTooLarge(f"{path}: {w}x{h} pixels is over the {max_pixels:,} limit", "downscale the image first")
    return f.rgb


def dicom_region(image, size) -> tuple | None:
    """((frame width, height), crop box) when ``image`` is a DICOM file read as ``size``
    (width, height) after its region crop; None otherwise (not DICOM, no crop, unknown frame)."""
    if not dicom.is_dicom(image):
        return None
    try:  # the header only: the crop is the one read_frames applies (dicom.region_box)
        import pydicom

        with warnings.catch_warnings():  # pydicom warnings can quote element values
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(image, stop_before_pixels=True)
        frame = (int(ds.Columns), int(ds.Rows))
        crop = dicom.region_box(ds, frame[1], frame[0])
    except Exception:  # noqa: BLE001 - untrusted header: "unknown" is the answer
        return None
    if crop is None or (crop[2] - crop[0], crop[3] - crop[1]) != tuple(size):
        return None
    return frame, crop


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def open_image(fh) -> Image.Image:
    """``PIL.Image.open(fh)`` of an open binary file, the same image object and errors.

    A file object gives Pillow no name to pick its decoder by, so ``Image.open`` imports
    five decoders (BMP, GIF, JPEG with subprocess, PPM, PNG) first; a PNG here is handed
    to Pillow's PNG decoder directly, as ``Image.open`` would, and anything else, a PNG
    the decoder refuses or one over Pillow's decompression-bomb limit goes through
    ``Image.open`` (its checks and messages)."""
    try:
        fh.seek(0)
        head = fh.read(len(PNG_SIGNATURE))
        fh.seek(0)
    except (AttributeError, OSError):     # not seekable: Image.open copies it first
        head = b""
    if head == PNG_SIGNATURE:
        from PIL import PngImagePlugin

        try:
            im = PngImagePlugin.PngImageFile(fh, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # as Image.open: try the others, then fail
            im = None
        limit = Image.MAX_IMAGE_PIXELS
        if im is not None and (limit is None or im.size[0] * im.size[1] <= limit):
            return im
        fh.seek(0)
    return Image.open(fh)


def _check_pixels(path, im: Image.Image, max_pixels: int) -> None:
    w, h = im.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"{path}: {w}x{h} pixels is over the {max_pixels:,} limit "
                            "(possible decompression bomb)", "downscale the image first")


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        top = float(a.max()) if a.size else 0.0
        if top > 65535:                    # 32-bit integer image: stretch its range
            a = a * (65535.0 / top)
        scale = 4095.0 if top <= 4095 else 65535.0   # 12-bit data in a 16-bit container
        g = np.clip(np.round(a * (255.0 / scale)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        g = np.clip(np.round(a * (255.0 / max(a.max(), 1e-12))), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)   # the only full-size copy besides the decoder's


def read_gray(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Mask file -> uint8 [H,W] (max over colour channels; alpha ignored).

    Same guards as :func:`read_rgb`: regular files only, a pixel limit."""
    with open_regular(path) as fh:
        try:
            with open_image(fh) as im:
                _check_pixels(path, im, max_pixels)
                im = ImageOps.exif_transpose(im)
                if im.mode in ("1", "L", "P"):
                    return np.asarray(im.convert("L"))
                return np.asarray(im.convert("RGB")).max(axis=2)
        except ImageError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
                Image.DecompressionBombError) as e:
            why = str(e).replace(repr(fh), "it")      # PIL names the handle: <_io.BufferedReader name=6>
            raise ImageError(f"{path}: mask cannot be read ({why})", "re-export it as a PNG") from None


def content_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape (robust to re-compression)."""
    h = hashlib.sha256(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
