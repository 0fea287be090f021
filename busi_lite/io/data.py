"""Dataset: discover the BUSI layout, validate it, group duplicates, split.

Layout: ``<root>/<class>/<stem>.png`` with lesion masks ``<stem>_mask.png`` and
extra masks ``<stem>_mask_1.png``, ``_mask_2.png`` ... (merged by union).
The one mask-file rule is :func:`is_mask_file` (case-insensitive: ``x_Mask.png``
is a mask too); every module that needs it calls it.

DICOM images sit beside PNG/JPEG: ``<stem>.dcm``/``.dicom``, or a regular file named
without an image extension that carries the ``DICM`` preamble (``dicom.is_dicom``, 132
bytes; e.g. ``IM_0001``, ``1.2.840.5``: the whole name is the stem). Masks follow the
same rule (``x_mask.png`` for ``x.dcm``); hidden files are skipped. A DICOM file is ONE
image (imread.read_rgb: its frame cropped to the ultrasound 2D region); a cine, or any
DICOM file when pydicom is missing, is a named per-file problem and the rest runs. A
mask has the size of the image as used (after the crop); a mask of the full frame's
size is cropped with the same region (:func:`read_mask`). Problems, notes and caches
name the file path only, never a patient attribute.

Contracts:
- Nothing here ever writes to the dataset.
- Any subset of the class folders may be present (BUS-BRA has no ``normal``);
  ``Dataset.classes`` lists the present ones and labels index into it. A missing
  or empty class folder is a note, fatal only for classes the caller requires.
- Only regular files are read (imread: a FIFO named ``x.png`` never blocks); every bad
  file (dangling symlink, symlink loop, unreadable, corrupt, decompression bomb)
  is a named per-file :class:`Problem` and the rest is processed.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from busi_lite.common.constants import CLASSES
from busi_lite.common.errors import BusiError, ImageError
from busi_lite.io import dicom
from busi_lite.io.imread import content_sha256, dicom_region, file_kind, os_reason, read_gray, read_rgb

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)


class DatasetError(BusiError):
    """The dataset cannot be used at all (e.g. missing folder); the message says what to do."""


def mask_of(path) -> tuple[str, int] | None:
    """(image stem, mask number) if ``path`` names a lesion mask file, else None.

    The one mask-file rule: the stem ends in ``_mask`` or ``_mask_<k>``,
    case-insensitive (``x_mask.png`` -> ("x", 0), ``x_Mask_2.png`` -> ("x", 2)).
    """
    m = _MASK_RE.match(Path(path).stem)
    return (m["stem"], int(m["k"] or 0)) if m else None


def is_mask_file(path) -> bool:
    """True when ``path`` is a lesion mask by the one mask-file rule (see :func:`mask_of`)."""
    return mask_of(path) is not None


@dataclass(frozen=True)
class Sample:
    path: str                       # relative to the root, POSIX: "benign/benign (1).png"
    label: int                      # index into the class names
    mask_paths: tuple[str, ...] = ()
    patient: str | None = None      # images of one patient share a split group (a manifest's patient column)
    box: tuple[int, int, int, int] | None = None  # lesion box (x0, y0, x1, y1) in image pixels, given by a manifest

    @property
    def has_mask(self) -> bool:
        return bool(self.mask_paths)


@dataclass(frozen=True)
class Problem:
    path: str
    what: str
    fix: str
    fatal: bool = False             # fatal: the dataset cannot be used as it is

    def __str__(self) -> str:
        return f"{self.path}: {self.what} -> {self.fix}"


@dataclass
class Dataset:
    root: Path
    classes: tuple[str, ...]          # the classes present, in the order asked; labels index into it
    samples: list[Sample]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # facts worth saying that are not problems

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def check(self, strict: bool = False) -> None:
        """Raise DatasetError on fatal problems (or on any problem when strict)."""
        bad = [p for p in self.problems if p.fatal or strict]
        if bad:
            lines = "\n  ".join(str(p) for p in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DatasetError(f"{len(bad)} problem(s) in {self.root}:\n  {lines}{more}",
                               "fix them (each line says how), then run again")


def natural_key(name: str):
    """Sort key: digit runs compare as numbers ("img2" before "img10")."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_EXT_PREFERENCE = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")  # lossless first


def discover(root, classes=CLASSES, require=()) -> Dataset:
    """List images and masks under ``root`` without decoding them.

    ``classes``: the class folder names to look for, in label order.
    ``require``: class names that must be present with images (``True``: all of
    ``classes``); a missing or empty required class folder is a fatal problem,
    any other one only a note. ``Dataset.classes`` lists the classes found.
    No class found at all is fatal; the fix names the right folder when the
    class folders are one level below or above ``root``.
    Per-file problems (mask without image, non-image or non-regular file,
    dangling symlink, two images with one name stem, a folder that is not a
    class folder) are collected on the returned Dataset; the bad file is left out.
    """
    root = Path(root)
    classes = tuple(classes)
    required = set(classes) if require is True else set(require or ())
    unknown = required - set(classes)
    if unknown:
        raise DatasetError(f"required class(es) {sorted(unknown)} are not among the classes {list(classes)}",
                           "require only classes that are looked for", param="require")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found",
                           f"give the folder that holds the class folders {', '.join(c + '/' for c in classes)}"
                           + _suggest(root, classes))
    samples, problems, notes, present, other = [], [], [], [], []
    try:
        top = sorted(root.iterdir(), key=lambda p: natural_key(p.name))
    except OSError as e:
        raise DatasetError(f"{root}: dataset folder cannot be listed ({e.strerror or e})",
                           "check its permissions") from None
    for entry in top:
        if entry.name.startswith(".") or entry.name in classes or not entry.is_dir():
            continue
        near = [c for c in classes if c.lower() == entry.name.lower()]
        other.append(Problem(f"{entry.name}/", "folder is not a class folder (ignored)",
                             f"rename it to {near[0]}/" if near else
                             f"move its images into one of {', '.join(c + '/' for c in classes)}, "
                             "or name it among the classes"))
    for cls in classes:
        folder = root / cls
        if not folder.is_dir():
            _absent(cls, f"{cls}/", "class folder missing", f"create {folder} with the {cls} images",
                    cls in required, problems, notes)
            continue
        try:
            images, masks = _scan_class(root, cls, problems)
        except OSError as e:  # the folder itself cannot be listed: never drop a class silently
            problems.append(Problem(f"{cls}/", f"class folder cannot be listed ({e.strerror or e})",
                                    "check its permissions", True))
            continue
        for stem, found in masks.items():
            if stem not in images:
                for _, rel in found:
                    problems.append(Problem(rel, "mask without image (ignored)",
                                            f"add the image '{stem}' or remove the mask"))
        if not images:
            _absent(cls, f"{cls}/", "class folder holds no images", f"put the {cls} images into {folder}",
                    cls in required, problems, notes)
            continue
        label = len(present)
        present.append(cls)
        for stem, rel in images.items():
            mp = tuple(r for _, r in sorted(masks.get(stem, [])))
            samples.append(Sample(rel, label, mp))
    if not present:  # the wrong folder: say only that, and where the right one is
        problems = [p for p in problems if p.fatal]
        problems.append(Problem(f"{root}/", f"no class folder with images ({', '.join(c + '/' for c in classes)})",
                                "give the dataset folder that holds them" + _suggest(root, classes), True))
        return Dataset(root, (), [], problems, [])
    return Dataset(root, tuple(present), samples, other + problems, notes)


def _absent(cls, path, what, fix, required, problems, notes):
    if required:
        problems.append(Problem(path, what, fix, True))
    else:
        notes.append(f"{path}: {what}; the dataset has no {cls} class")


def _scan_class(root: Path, cls: str, problems: list) -> tuple[dict, dict]:
    """One class folder -> (images {stem: rel}, masks {stem: [(k, rel)]}); bad entries -> problems."""
    images, masks = {}, {}
    entries = sorted((root / cls).iterdir(), key=lambda p: natural_key(p.name))
    # among files sharing a stem, the preferred extension wins (x.png over x.jpg)
    entries.sort(key=lambda p: (p.suffix.lower() not in _EXT_PREFERENCE,
                                _EXT_PREFERENCE.index(p.suffix.lower()) if p.suffix.lower() in _EXT_PREFERENCE else 0))
    for f in entries:
        rel = f"{cls}/{f.name}"
        if f.name.startswith("."):
            continue
        try:
            mode = f.stat().st_mode  # follows symlinks
        except OSError as e:
            problems.append(Problem(rel, f"cannot be read ({os_reason(f, e)}; ignored)",
                                    "fix the link or remove it"))
            continue
        if stat.S_ISDIR(mode):
            problems.append(Problem(rel + "/", "folder inside a class folder is not searched (ignored)",
                                    f"move its images up into {cls}/ or out of the dataset"))
            continue
        key = _image_key(f, mode)
        if key is None:
            problems.append(Problem(rel, "not an image file (ignored)",
                                    "remove it or move it out of the dataset folder"))
            continue
        if not stat.S_ISREG(mode):
            problems.append(Problem(rel, f"not a regular file ({file_kind(mode)}; ignored)",
                                    "remove it or replace it with the image file"))
            continue
        m = mask_of(f)
        if m:
            stem, k = m
            if any(k == k2 for k2, _ in masks.get(stem, [])):
                other = next(r for k2, r in masks[stem] if k2 == k)
                problems.append(Problem(rel, f"another mask file for the same image is used ({other}; ignored)",
                                        "remove one of them"))
                continue
            masks.setdefault(stem, []).append((k, rel))
        elif key in images:
            problems.append(Problem(rel, f"another image with the same name is used ({images[key]}; ignored)",
                                    "rename or remove one of them"))
        else:
            images[key] = rel
    images = dict(sorted(images.items(), key=lambda kv: natural_key(kv[1].split("/", 1)[1])))
    return images, masks


def _image_key(f: Path, mode: int) -> str | None:
    """The stem masks pair with, or None when ``f`` is not an image file.

    Image extensions and ``.dcm``/``.dicom`` by name: their stem. Any other name:
    a regular file with the DICM preamble is a DICOM image keyed by its whole name
    (scanner exports are often extensionless or named by UID, ``1.2.840.5``)."""
    suffix = f.suffix.lower()
    if suffix in IMAGE_EXTS or suffix in dicom.DICOM_SUFFIXES:
        return f.stem
    if stat.S_ISREG(mode) and dicom.is_dicom(f):
        return f.name
    return None


def _suggest(root: Path, classes) -> str:
    """' -> found class folders in X -> use that folder' when X is one level below or above root."""
    def has_classes(d: Path) -> bool:
        try:
            return any((d / c).is_dir() for c in classes)
        except OSError:
            return False

    cands = []
    try:
        if root.is_dir():
            cands = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                     and has_classes(d)]
    except OSError:
        pass
    if not cands and has_classes(root.resolve().parent):
        cands = [root.resolve().parent]
    if not cands:
        return ""
    which = "that folder" if len(cands) == 1 else "one of them"
    return f" (found class folders in {', '.join(str(c) for c in cands[:3])}: use {which})"


# ---------------------------------------------------------------- masks

def read_mask(root, sample: Sample, size: tuple[int, int]) -> np.ndarray | None:
    """Union of the sample's masks as bool [H,W]; None when it has none.

    ``size`` is the image's (width, height) as used. For a DICOM image cropped to
    its ultrasound region, a mask of the full frame's size is cropped with the same
    region. Raises ImageError on any other size mismatch or a non-binary mask.
    """
    if not sample.mask_paths:
        return None
    out = np.zeros((size[1], size[0]), dtype=bool)
    crop = None
    for rel in sample.mask_paths:
        path = Path(root) / rel
        a = read_gray(path)
        if (a.shape[1], a.shape[0]) != tuple(size):
            crop = crop or dicom_region(Path(root) / sample.path, size)
            if crop is None or (a.shape[1], a.shape[0]) != crop[0]:
                raise ImageError(f"{path}: mask is {a.shape[1]}x{a.shape[0]} but its image is "
                                 f"{size[0]}x{size[1]}" + (f" (its DICOM frame {crop[0][0]}x{crop[0][1]})"
                                                           if crop else ""),
                                 "re-export the mask at the image's size" + (" or the frame's" if crop else ""))
            x0, y0, x1, y1 = crop[1]
            a = a[y0:y1, x0:x1]
        counts = np.bincount(a.ravel(), minlength=256)
        odd = np.nonzero(counts[2:255])[0] + 2
        if len(odd):
            raise ImageError(f"{path}: mask is not binary (has values {odd[:5].tolist()})",
                             "save it with black (0) background and white (255) lesion only")
        out |= a > 0
    return out


# ---------------------------------------------------------------- duplicates

_N = np.arange(32)
_DCT = np.cos(np.pi * (2 * _N[None, :] + 1) * _N[:, None] / 64)  # DCT-II basis for 32x32 thumbnails


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash: 8x8 low-frequency DCT of a 32x32 gray thumbnail vs its median."""
    g = Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.BOX)
    d = _DCT @ np.asarray(g, dtype=np.float64) @ _DCT.T
    low = d[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def components(n: int, pairs) -> np.ndarray:
    """Component id [N] of ``n`` items joined by ``pairs`` of indices (union-find, transitive):
    each component's id is its smallest index."""
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def key_pairs(keys):
    """(first index with the key, i) for every item whose key (hashable, None = no key) came before."""
    first = {}
    for i, k in enumerate(keys):
        if k is not None and first.setdefault(k, i) != i:
            yield first[k], i


def duplicate_groups(hashes, phashes, max_distance: int = 10) -> np.ndarray:
    """Group ids [N]: images with equal content hashes or pHashes within
    ``max_distance`` bits (Hamming) share a group (transitive).

    Group ids are the index of the group's first member, so they are stable
    for a fixed file order.
    """
    n = len(hashes)
    pairs = list(key_pairs(hashes))
    ph = np.array([int(p) for p in phashes], dtype=np.uint64)
    for i in range(n - 1):
        x = ph[i] ^ ph[i + 1:]
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        pairs += [(i, i + 1 + int(j)) for j in np.nonzero(dist <= max_distance)[0]]
    return components(n, pairs)


def mixed_label_groups(groups: np.ndarray, labels: np.ndarray) -> list[int]:
    """Group ids whose members carry more than one label."""
    return sorted(int(g) for g in np.unique(groups) if len(np.unique(labels[groups == g])) > 1)


# ---------------------------------------------------------------- split

@dataclass(frozen=True)
class Split:
    train: np.ndarray     # indices into the sample list
    test: np.ndarray
    excluded: np.ndarray  # members of mixed-label groups (kept out of both)
    seed: int

    def digest(self, paths) -> str:
        """Short hash of which files are in test/train: identifies a split."""
        h = hashlib.sha256()
        for name, idx in (("train", self.train), ("test", self.test)):
            h.update(name.encode())
            for i in sorted(paths[j] for j in idx):
                h.update(i.encode() + b"\0")
        return h.hexdigest()[:16]


def split(labels, groups, paths, seed: int, test_fraction: float = 0.15,
          drop_mixed: bool = True) -> Split:
    """Stratified, group-aware, seeded train/test split.

    Per class, groups are ordered by their first member's path, shuffled with
    ``np.random.default_rng(seed)`` and moved to test until the class's test
    share reaches ``test_fraction``; a group never straddles train and test.
    Same seed and file list -> same split on any machine.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    mixed = set(mixed_label_groups(groups, labels)) if drop_mixed else set()
    excluded = np.array([i for i, g in enumerate(groups) if g in mixed], dtype=np.int64)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = {}
        for i in np.nonzero(labels == c)[0]:
            if groups[i] not in mixed:
                members.setdefault(groups[i], []).append(int(i))
        order = sorted(members, key=lambda g: min(paths[i] for i in members[g]))
        total = sum(len(v) for v in members.values())
        goal = round(test_fraction * total)
        taken = 0
        for k in rng.permutation(len(order)):
            if taken >= goal:
                break
            grp = members[order[k]]
            if taken + len(grp) > goal + max(1, len(grp) // 2) and taken > 0:
                continue  # a big group would overshoot; try a smaller one
            test += grp
            taken += len(grp)
    test_set = set(test)
    ex = set(excluded.tolist())
    train = np.array([i for i in range(len(labels)) if i not in test_set and i not in ex], dtype=np.int64)
    return Split(train, np.array(sorted(test_set), dtype=np.int64), excluded, seed)


def file_problem(rel: str, e: Exception) -> Problem:
    """A per-file failure (ImageError or an unexpected OS/decoder error) -> a named Problem."""
    if isinstance(e, ImageError):
        what = e.what.split(": ", 1)[1] if ": " in e.what else e.what
        return Problem(rel, what, e.fix or "replace or remove the file")
    kind = "out of memory" if isinstance(e, MemoryError) else type(e).__name__
    return Problem(rel, f"cannot be read ({kind}: {str(e)[:200]})", "replace or remove the file")


def inspect(ds: Dataset, workers: int = 2) -> dict:
    """Decode every image and mask of ``ds``: sizes, problems, duplicate groups.

    Bad files become Problems (and are left out; one bad file never stops the
    rest); returns a JSON-able inventory.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(s: Sample):
        rgb = read_rgb(ds.root / s.path)
        mask = read_mask(ds.root, s, (rgb.shape[1], rgb.shape[0]))
        return rgb.shape[1], rgb.shape[0], mask is not None and bool(mask.any()), content_sha256(rgb), phash(rgb)

    problems, ok, rows = list(ds.problems), [], []
    with ThreadPoolExecutor(workers) as pool:
        for s, fut in zip(ds.samples, [pool.submit(one, s) for s in ds.samples]):
            try:
                rows.append(fut.result())
                ok.append(s)
            except (ImageError, OSError, ValueError, MemoryError) as e:
                problems.append(file_problem(s.path, e))
    labels = np.array([s.label for s in ok], dtype=np.int64)
    groups = duplicate_groups([r[3] for r in rows], [r[4] for r in rows]) if rows else np.zeros(0, int)
    paths = [s.path for s in ok]
    multi = [[paths[i] for i in np.nonzero(groups == g)[0]] for g in np.unique(groups)
             if (groups == g).sum() > 1]
    mixed = [[paths[i] for i in np.nonzero(groups == g)[0]] for g in mixed_label_groups(groups, labels)]
    w = np.array([r[0] for r in rows]) if rows else np.zeros(1)
    h = np.array([r[1] for r in rows]) if rows else np.zeros(1)
    return {
        "root": str(ds.root),
        "classes": list(ds.classes),
        "notes": list(ds.notes),
        "counts": {c: int((labels == i).sum()) for i, c in enumerate(ds.classes)},
        "with_lesion_mask": {c: int(sum(r[2] for r, s in zip(rows, ok) if s.label == i))
                             for i, c in enumerate(ds.classes)},
        "extra_masks": int(sum(max(0, len(s.mask_paths) - 1) for s in ok)),
        "width": [int(w.min()), int(np.median(w)), int(w.max())],
        "height": [int(h.min()), int(np.median(h)), int(h.max())],
        "duplicate_groups": multi,
        "mixed_label_groups": mixed,
        "problems": [{"path": p.path, "what": p.what, "fix": p.fix, "fatal": p.fatal} for p in problems],
    }


def group_kfold(labels, groups, paths, k: int, seed: int) -> np.ndarray:
    """Fold id [N] in 0..k-1: groups kept whole, classes spread evenly (seeded).

    Per class, groups (ordered by first path, then shuffled) go one by one to
    the fold holding the fewest images of that class so far.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1, dtype=np.int64)
    for c in np.unique(labels):
        members = {}
        for i in np.nonzero(labels == c)[0]:
            members.setdefault(groups[i], []).append(int(i))
        order = sorted(members, key=lambda g: min(paths[i] for i in members[g]))
        load = np.zeros(k, dtype=np.int64)
        for j in rng.permutation(len(order)):
            grp = [i for i in members[order[j]] if fold[i] < 0]
            f = int(np.argmin(load))
            fold[grp] = f
            load[f] += len(grp)
    # a group with members of several labels may have been split across folds: unify it
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        fold[idx] = fold[idx[0]]
    return fold
