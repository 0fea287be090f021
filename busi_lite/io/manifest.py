"""A clinic's data as it is: a CSV manifest of files and outcomes (dataset source kind "manifest").

    file,label[,patient][,x0,y0,x1,y1]
    scans/0001.dcm,malignant,P17,120,80,260,190

- ``file``: image path relative to the CSV's folder (PNG/JPEG/... or DICOM); its lesion masks,
  if any, follow the folder rule (``<stem>_mask.png`` beside it).
- ``label``: a class name (normal, benign, malignant; case and spaces ignored).
- ``patient`` (optional): images of one patient share one split group, so a patient never
  straddles training and test.
- ``x0,y0,x1,y1`` (optional, all four or none): the lesion box in the image's pixels; it feeds
  the lesion-box head (features.cache makes the box views from it; a mask gives one otherwise).

Named problems, the row left out (the rest is used): unknown label, missing or unreadable file,
a file listed twice (the first row is used). A box that is not four whole numbers or lies outside
the image is a problem too; the image is used without it. A missing column ``file`` or ``label``
is fatal. Nothing is written; the rows keep the CSV's order.
"""

from __future__ import annotations

import csv
import glob
import stat
from pathlib import Path

from busi_lite.common.constants import CLASSES
from busi_lite.io import data as D
from busi_lite.io import dicom
from busi_lite.io.imread import os_reason

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header (no full decode), None when not known cheaply (DICOM)."""
    if path.suffix.lower() in dicom.DICOM_SUFFIXES:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - the decode at extraction names the exact problem
        return None


def parse_box(row: dict, size) -> tuple[tuple | None, str | None]:
    """(box, problem): the row's x0,y0,x1,y1 as whole pixels inside ``size`` (w, h) when known."""
    vals = [str(row.get(k) or "").strip() for k in BOX_COLUMNS]
    if not any(vals):
        return None, None
    try:
        x0, y0, x1, y1 = (int(float(v)) for v in vals)
    except ValueError:
        return None, f"box {','.join(vals)} is not four whole numbers x0,y0,x1,y1 (box ignored)"
    if not (x0 < x1 and y0 < y1 and min(x0, y0) >= 0):
        return None, f"box {x0},{y0},{x1},{y1} is empty or negative: need 0 <= x0 < x1, 0 <= y0 < y1 (box ignored)"
    if size is not None and (x1 > size[0] or y1 > size[1]):
        return None, f"box {x0},{y0},{x1},{y1} lies outside the {size[0]}x{size[1]} image (box ignored)"
    return (x0, y0, x1, y1), None


def read_manifest(path, classes=CLASSES, require=()) -> D.Dataset:
    """The manifest at ``path`` as a Dataset (root = the CSV's folder); see the module docstring.
    ``classes``/``require`` as in data.discover."""
    path = Path(path)
    classes = tuple(classes)
    required = set(classes) if require is True else set(require or ())
    root = path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            head = [h.strip().lower() for h in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): v for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise D.DatasetError(f"{path}: manifest cannot be read ({e})", "give a UTF-8 CSV file", param="data") from None
    missing = [c for c in ("file", "label") if c not in head]
    if missing:
        raise D.DatasetError(f"{path}: manifest lacks the column(s) {', '.join(missing)} (has {', '.join(head)})",
                             "give a CSV with a header line file,label[,patient][,x0,y0,x1,y1]", param="data")
    partial_box = [c for c in BOX_COLUMNS if c in head]
    if partial_box and len(partial_box) < 4:
        raise D.DatasetError(f"{path}: box columns {', '.join(partial_box)} without the other ones",
                             "give all four box columns x0,y0,x1,y1 or none", param="data")
    problems, kept, seen = [], [], {}
    for n, r in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        rel = str(r.get("file") or "").strip()
        where = f"{path.name}:{n} {rel}"
        label = str(r.get("label") or "").strip().lower()
        if not rel:
            problems.append(D.Problem(where, "no file given (row ignored)",
                                      "fill in the file column or remove the row"))
            continue
        if label not in classes:
            problems.append(D.Problem(where, f"unknown label {r.get('label')!r} (row ignored)",
                                      f"use one of {', '.join(classes)}"))
            continue
        f = root / rel
        try:
            mode = f.stat().st_mode
        except OSError as e:
            problems.append(D.Problem(where, f"file not found or unreadable ({os_reason(f, e)}; row ignored)",
                                      "fix the path (relative to the CSV's folder) or remove the row"))
            continue
        if not stat.S_ISREG(mode):
            problems.append(D.Problem(where, "not a regular file (row ignored)", "give the image file itself"))
            continue
        key = str(f.resolve())
        if key in seen:
            problems.append(D.Problem(where, f"file listed twice (line {seen[key]} is used; row ignored)",
                                      "remove the duplicate row"))
            continue
        seen[key] = n
        box, what = parse_box(r, image_size(f) if partial_box else None)
        if what:
            problems.append(D.Problem(where, what, "correct the box or leave the four box cells empty"))
        patient = str(r.get("patient") or "").strip() or None
        masks = _masks(f, root)
        kept.append((rel, label, masks, patient, box))
    present = [c for c in classes if any(k[1] == c for k in kept)]
    notes = []
    for c in classes:
        if c not in present:
            if c in required:
                problems.append(D.Problem(path.name, f"no {c} image", f"add {c} rows to the manifest", True))
            else:
                notes.append(f"{path.name}: no {c} row; the dataset has no {c} class")
    if not kept:
        problems.append(D.Problem(path.name, "no usable row", "fix the problems listed", True))
    samples = [D.Sample(rel, present.index(lab), masks, patient, box) for rel, lab, masks, patient, box in kept]
    return D.Dataset(root, tuple(present), samples, problems, notes)


def _masks(f: Path, root: Path) -> tuple[str, ...]:
    """Mask files of image ``f`` by the folder rule (``<stem>_mask.png``, ``_mask_<k>.png``), relative to root."""
    out = []
    for m in sorted(f.parent.glob(f"{glob.escape(f.stem)}_[mM][aA][sS][kK]*")):
        mk = D.mask_of(m)
        if mk and mk[0] == f.stem and m.is_file():
            out.append((mk[1], m.relative_to(root).as_posix()))
    return tuple(r for _, r in sorted(out))
