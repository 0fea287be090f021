"""Lesion boxes given by the user: ``--box x0,y0,x1,y1``, a ``boxes.csv`` for folders, the Python API.

A :class:`LesionBox` is four numbers in the pixels of the file as stored (for DICOM: the
frame, before the ultrasound-region crop), x1/y1 exclusive, plus ``source``: where it came
from ("--box", "boxes.csv line 7", "box"), so every error names what the user must fix.

One rule for every face (CLI ``--box``, boxes.csv, the web page's ``box`` field, the Python API):
:func:`make_box` reads four finite numbers with the top-left corner first (x1 > x0 and y1 > y0;
swapped corners are refused, not sorted: "x,y,width,height" must not pass as a box), and
:func:`box_in_image` clamps it to the image (whole pixels: x0, y0 down, x1, y1 up) and refuses a box
with less than 2 pixels inside. :func:`parse_box` is the two in one.

``boxes.csv``: a header line with the columns ``file,x0,y0,x1,y1`` (any order, extra columns
ignored), one row per image. ``file`` is relative to the csv's folder or absolute. Files
without a row get no box; a bad row (missing or non-numeric value, x1 <= x0, a file named
twice) is a :class:`BoxError` naming the csv line. Whether a box fits its image is checked
when the image is decoded (:func:`box_in_image`), and fails that image only.
Serving only: nothing here imports training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from busi_lite.common.errors import BusiError
from busi_lite.features.preprocess import check_box

COLUMNS = ("file", "x0", "y0", "x1", "y1")


class BoxError(BusiError):
    """A lesion box the user gave cannot be used: what -> fix."""


@dataclass(frozen=True)
class LesionBox:
    """(x0, y0, x1, y1) in stored-file pixels, x1/y1 exclusive; ``source`` names where it came from."""
    x0: float
    y0: float
    x1: float
    y1: float
    source: str = "box"

    def as_tuple(self) -> tuple:
        return (self.x0, self.y0, self.x1, self.y1)


def make_box(value, source: str = "box") -> LesionBox:
    """A LesionBox from "x0,y0,x1,y1", four numbers or a LesionBox; BoxError naming ``source`` otherwise."""
    if isinstance(value, LesionBox):
        return value
    if isinstance(value, str):
        parts = value.split(",")
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = []
    try:
        vals = [float(v) for v in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise BoxError(f"{source}: lesion box {value!r} is not four numbers x0,y0,x1,y1",
                       "give it as x0,y0,x1,y1 in the image's pixels, e.g. 120,80,260,190", param="box")
    x0, y0, x1, y1 = vals
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"{source}: lesion box {value!r} has x1 <= x0 or y1 <= y0",
                       "give the top-left corner first: x0,y0 then the bottom-right corner x1,y1", param="box")
    return LesionBox(x0, y0, x1, y1, source)


def box_in_image(box: LesionBox, width: int, height: int, dx: int = 0, dy: int = 0) -> tuple[int, int, int, int]:
    """The box in the pixels of a decoded image of ``width`` x ``height`` whose origin is at
    (dx, dy) of the stored file (DICOM region crop), clamped; BoxError naming ``box.source``
    when nothing of it is inside."""
    try:
        return check_box((box.x0 - dx, box.y0 - dy, box.x1 - dx, box.y1 - dy), width, height)
    except BusiError:
        raise BoxError(f"{box.source}: lesion box {_fmt(box)} lies outside the {width}x{height} image"
                       + (f" (ultrasound region at {dx},{dy} of the stored frame)" if dx or dy else ""),
                       "give a box inside the image, in its pixels (x0,y0 top-left, x1,y1 bottom-right)",
                       param="box") from None


def parse_box(value, width: int, height: int, source: str = "box") -> tuple[int, int, int, int]:
    """``value`` ("x0,y0,x1,y1", four numbers or a LesionBox) -> the box clamped to a ``width`` x
    ``height`` image, whole pixels; BoxError naming ``source`` otherwise (make_box, then box_in_image)."""
    return box_in_image(make_box(value, source), width, height)


def _fmt(box: LesionBox) -> str:
    return ",".join(f"{v:g}" for v in box.as_tuple())


def read_boxes_csv(path) -> dict[Path, LesionBox]:
    """``boxes.csv`` -> {resolved image path: LesionBox}; BoxError naming the file and line."""
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BoxError(f"{path}: boxes file cannot be read ({e})", "give a UTF-8 CSV with columns file,x0,y0,x1,y1",
                       param="boxes") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    cols = [c.strip().lower() for c in header or []]
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise BoxError(f"{path} line 1: header {header!r} lacks column(s) {', '.join(missing)}",
                       "start the file with the header line file,x0,y0,x1,y1", param="boxes")
    idx = {c: cols.index(c) for c in COLUMNS}
    out: dict[Path, LesionBox] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path} line {line}"
        if len(row) < len(cols):
            raise BoxError(f"{where}: {len(row)} values, the header has {len(cols)}",
                           "give file,x0,y0,x1,y1 on every line", param="boxes")
        name = row[idx["file"]].strip()
        if not name:
            raise BoxError(f"{where}: the file column is empty", "name the image, relative to the csv's folder",
                           param="boxes")
        box = make_box([row[idx[c]].strip() for c in COLUMNS[1:]], where)
        f = Path(name)
        key = (f if f.is_absolute() else path.parent / f).resolve()
        if key in out:
            raise BoxError(f"{where}: {name} already has a box ({out[key].source})", "give one box per image",
                           param="boxes")
        out[key] = box
    return out
