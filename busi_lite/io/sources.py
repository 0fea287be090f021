"""Dataset sources by kind: where a dataset's images, labels, patients and boxes come from.

A source turns what the user points at into a :class:`busi_lite.io.data.Dataset` (samples with
paths relative to ``root``). Kinds, tried in order by :func:`open_source`:

- ``folder``: a BUSI-layout folder, ``<root>/<class>/<image>`` with ``<image>_mask.png``
  (busi_lite.io.data.discover);
- ``manifest``: a CSV file ``file,label[,patient][,x0,y0,x1,y1]`` (busi_lite.io.manifest).

A new layout is one file with a class like these (``kind``, ``matches(path)``, ``name``,
``root``, ``discover(classes, require)``) and one line in :data:`SOURCES`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from busi_lite.common.constants import CLASSES
from busi_lite.io import data as D
from busi_lite.io.manifest import read_manifest


class FolderSource:
    """A BUSI-layout folder (class folders with images and ``_mask`` files)."""
    kind = "folder"

    def __init__(self, path):
        self.path = Path(path)
        self.root = self.path

    @staticmethod
    def matches(path: Path) -> bool:
        return path.is_dir()

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def discover(self, classes=CLASSES, require=()) -> D.Dataset:
        return D.discover(self.path, classes, require)


class ManifestSource:
    """A CSV manifest; image paths relative to its folder."""
    kind = "manifest"

    def __init__(self, path):
        self.path = Path(path)
        self.root = self.path.parent

    @staticmethod
    def matches(path: Path) -> bool:
        return path.suffix.lower() == ".csv" and path.is_file()

    @property
    def name(self) -> str:
        stem = self.path.stem
        return self.path.resolve().parent.name if stem.lower() in ("manifest", "labels", "dev", "data") else stem

    def discover(self, classes=CLASSES, require=()) -> D.Dataset:
        return read_manifest(self.path, classes, require)


def samples_digest(ds: D.Dataset) -> str:
    """SHA-256 (16 hex) of what a dataset says about its files without reading them: paths, labels,
    masks, patients and boxes. Equal digests = the same listing (not necessarily the same bytes)."""
    h = hashlib.sha256()
    for s in ds.samples:
        h.update(repr((s.path, ds.classes[s.label], s.mask_paths, s.patient, s.box)).encode() + b"\0")
    return h.hexdigest()[:16]


def patient_groups(groups, patients) -> np.ndarray:
    """Group ids [N] that also join images of one patient (``patients`` [N]: a name or None):
    each merged group takes the smallest id among its members."""
    groups = np.asarray(groups, np.int64)
    comp = D.components(len(groups), [*D.key_pairs(groups.tolist()), *D.key_pairs(patients)])
    lowest = groups.copy()
    np.minimum.at(lowest, comp, groups)
    return lowest[comp]


SOURCES = {"folder": FolderSource, "manifest": ManifestSource}


def open_source(path):
    """The source for ``path`` (a dataset folder or a manifest CSV); DatasetError when none fits."""
    path = Path(path)
    for cls in SOURCES.values():
        if cls.matches(path):
            return cls(path)
    if not path.exists():
        return FolderSource(path)  # discover names the missing folder and suggests the right one
    raise D.DatasetError(f"{path}: neither a dataset folder nor a CSV manifest",
                         "give a folder with class folders (normal/ benign/ malignant/) or a manifest .csv "
                         "with columns file,label[,patient][,x0,y0,x1,y1]", param="data")
