"""Feature cache: one HDF5 file holding backbone features of every image and view.

Layout (N rows, one per image, in discovery order):
  /index/{path, label, source_sha256, content_sha256, phash, has_mask, group, width, height}
  /features/<view>  [N,G,G,D]    float16   spatial backbone features ('raw' + views.ALL_VIEWS chosen)
  /pooled/<view>    [N,D]        float32   global average pool of the above
  /grid/<view>      [N,G,G]      float16   lesion fraction per cell of the view's SxS input
  /valid/<view>     [N]          bool      row holds this view (views need a lesion mask)
  /mask224          [N,S,S]      bool      the lesion mask of the raw view's SxS crop
  attrs: backbone_sha256, backbone_file, backbone (spec name), backbone_spec (JSON), preprocess_version,
         package_version, views, classes, dataset_root (the folder the paths are
         relative to), dataset_source (the folder or manifest given), dataset_kind,
         samples_digest (io.sources.samples_digest of the listing extracted)
S, G, D: the backbone spec's input_size, grid, n_features (224, 7, 1280 for the default backbone);
a cache without ``backbone_spec`` was extracted with features.spec.DEFAULT.

``preprocess_version`` is the NAME of the preprocessing (busi_lite.features.preprocess: v1 =
Teachable Machine's, v2 = contrast-normalised) every view went through; an incremental
extract into a cache of another preprocessing, backbone or view list is refused (force
rebuilds). Default file names: ``default_cache(preprocess)`` = cache/busi_features.h5 for v1,
cache/busi_features_v2.h5 for v2, so the two never collide. Views (busi_lite.features.views):
``raw`` always; ``flip`` every image; mask-fused and box views only for images with a
lesion mask (``valid``). Their grids are the mask's lesion fraction in that view's input.

Writes go to a temporary file next to the cache (atomic.atomic_path), renamed
over it only when complete, under an exclusive lock: an interrupted (Ctrl-C,
SIGTERM) or concurrent run never damages the previous cache; disk full is one
BusiError naming the path; temp files of killed runs are removed by the next
run. One bad image or mask file is a named problem, the rest is extracted.

Readers (:class:`FeatureCache`) hold ONE open handle for their lifetime, so a
cache replaced while it is read (another extract finishing) is never mixed
into what they return. A damaged file gives a CacheError saying to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from busi_lite.common.atomic import LatchedFile, atomic_path, clean_stale, os_error, sigterm_as_exit, write_lock
from busi_lite.common.constants import CLASSES
from busi_lite.common.constants import VERSION as __version__
from busi_lite.common.errors import BusiError, ConfigError, ImageError
from busi_lite.common.progress import progress_bar
from busi_lite.features.backbone import Backbone, center_crop, crop_resize
from busi_lite.features.preprocess import SHORT, V1, Preprocessing, margin_box, mask_box, mirror
from busi_lite.features.spec import DEFAULT, BackboneSpec, check_stored
from busi_lite.features.views import ALL_VIEWS, VIEWS, make_views, view_boxes
from busi_lite.io import data as D
from busi_lite.io.imread import content_sha256, open_regular, read_rgb
from busi_lite.io.sources import open_source, patient_groups, samples_digest

DEFAULT_CACHE = Path("cache") / "busi_features.h5"
ENV_CACHE = "BUSI_LITE_CACHE"
BATCH = 32           # images decoded per batch (the next batch is decoded while this one runs)
BACKBONE_BATCH = 32  # inputs per backbone run (onnxruntime's buffers grow with it: ~180 MB at 32)


REBUILD = "rebuild the cache (extract with force)"


def default_cache(preprocess=V1, stem: str = "busi") -> Path:
    """cache/<stem>_features.h5 for v1, cache/<stem>_features_v2.h5 for v2 (never the same file)."""
    pp = Preprocessing.named(preprocess)
    suffix = "" if pp.name == V1 else "_" + next(k for k, v in SHORT.items() if v == pp.name)
    return DEFAULT_CACHE.parent / f"{stem}_features{suffix}.h5"


class CacheError(BusiError):
    """The cache cannot be used as asked; ``fix`` says what to do."""


def source_sha256(root: Path, sample: D.Sample) -> str:
    """Hash of the image file's and its masks' bytes: changes when any of them changes.

    Only regular files are read (data.open_regular); raises ImageError naming the file."""
    h = hashlib.sha256()
    if sample.box is not None:  # a manifest's box makes the box views: a new box is a new row
        h.update(f"box{sample.box}".encode())
    for rel in (sample.path,) + sample.mask_paths:
        h.update(rel.encode() + b"\0")
        with open_regular(root / rel) as fh:
            try:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            except OSError as e:
                raise ImageError(f"{root / rel}: cannot be read ({e.strerror or e})",
                                   "fix or remove the file") from None
    return h.hexdigest()


def grid_fraction(mask: np.ndarray, region=None, spec: BackboneSpec = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """Mask bool [H,W] -> (lesion fraction per grid cell [G,G], mask at input size [S,S] bool),
    both of the same centre crop the backbone sees (or of ``region`` (l, t, r, b) resized to S)."""
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    size, g, cell = spec.input_size, spec.grid, spec.cell_px
    m224 = np.asarray(center_crop(im, size) if region is None else crop_resize(im, region, size)) >= 128
    frac = m224.reshape(g, cell, g, cell).mean(axis=(1, 3))
    return frac.astype(np.float32), m224


@dataclass
class _Item:
    """One decoded image with its views, ready for the backbone."""
    index: int
    inputs: dict          # view -> uint8 [S,S,3] (Preprocessing.resized; intensity applied at the backbone)
    grids: dict           # view -> [G,G]
    mask224: np.ndarray
    content_sha256: str
    phash: int
    size: tuple[int, int]
    has_mask: bool        # a non-empty lesion mask (anywhere in the image)


def _prepare(root: Path, sample: D.Sample, index: int, views, pp: Preprocessing, spec: BackboneSpec) -> _Item:
    rgb = read_rgb(root / sample.path)
    size = (rgb.shape[1], rgb.shape[0])
    mask = D.read_mask(root, sample, size)
    if mask is None:
        mask = np.zeros(rgb.shape[:2], dtype=bool)
    inputs, grids = {"raw": pp.resized(rgb)}, {}
    grids["raw"], m224 = grid_fraction(mask, None, spec)
    if "flip" in views:
        inputs["flip"], grids["flip"] = mirror(inputs["raw"]), grids["raw"][:, ::-1].copy()
    for v, (vrgb, vmask) in make_views(rgb, mask, [v for v in views if v in VIEWS]).items():
        inputs[v] = pp.resized(vrgb)
        grids[v] = grid_fraction(vmask, None, spec)[0]
    box = sample.box if sample.box is not None else mask_box(mask)
    if box is not None:
        for base, b in view_boxes(box, size[0], size[1], sample.path, views).items():
            x = pp.resized(rgb, box=b)
            g = grid_fraction(mask, margin_box(b, size[0], size[1]), spec)[0]
            if base in views:
                inputs[base], grids[base] = x, g
            if base + "_flip" in views:
                inputs[base + "_flip"], grids[base + "_flip"] = mirror(x), g[:, ::-1].copy()
    return _Item(index, inputs, grids, m224, content_sha256(rgb), D.phash(rgb), size, bool(mask.any()))


class CacheBusy(CacheError):
    """Another extract holds the cache's write lock; ``holder`` is its PID (None if unknown)."""

    def __init__(self, what: str, fix: str, holder: int | None):
        super().__init__(what, fix, param="out")
        self.holder = holder


def _lock(out: Path):
    """The cache's write lock (``OUT.lock``, removed when the extract ends)."""
    return write_lock(out.with_name(out.name + ".lock"), f"cache {out}", remove=True, busy=CacheBusy)


def _open_old(out: Path, backbone: Backbone, views, force: bool, pp: Preprocessing):
    """Return the reusable old cache (h5py.File) or None."""
    if force or not out.exists():
        return None
    try:
        old = h5py.File(out, "r")
        a = old.attrs
        reason = None
        if a.get("backbone_sha256") != backbone.sha256:
            reason = f"it was built with another backbone (sha256 {str(a.get('backbone_sha256'))[:12]}...)"
        elif a.get("preprocess_version") != pp.name:
            reason = f"it was extracted with preprocessing {a.get('preprocess_version')!r}, this run uses {pp.name!r}"
        elif sorted(a.get("views", "").split(",")) != sorted(("raw",) + tuple(views)):
            reason = f"it holds views {a.get('views')!r}"
    except (OSError, KeyError) as e:
        raise CacheError(f"{out}: existing cache is unreadable ({e})", REBUILD, param="force") from None
    if reason:
        old.close()
        raise CacheError(f"{out}: {reason}, not what this run would write; mixing is refused",
                         f"{REBUILD}, or write to another cache file", param="force")
    return old


def extract(data_root, out=DEFAULT_CACHE, backbone=None, views=ALL_VIEWS, force=False, strict=False,
            classes=CLASSES, batch_size=BATCH, log=None, progress=True, require=(), preprocess=V1) -> dict:
    """Extract features of every valid image (and its views) into ``out``.

    ``preprocess``: 'v1' | 'v2' (or a full name, busi_lite.features.preprocess), stored as the
    cache's ``preprocess_version``. ``views``: any of views.ALL_VIEWS ('raw' is always there).

    Incremental: rows whose image and mask bytes are unchanged are copied from
    the existing cache. ``classes``/``require`` as in data.discover: the cache
    records the classes found (attr ``classes``). Bad files are skipped and
    listed (``strict``: the first one aborts). Returns a summary dict (counts,
    timings, problems, notes).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    pp = Preprocessing.named(preprocess)
    views = tuple(v for v in views if v != "raw")
    for v in views:
        if v not in ALL_VIEWS:
            raise ValueError(f"unknown view {v!r}; choose from {', '.join(ALL_VIEWS)}")
    src = open_source(data_root)
    ds = src.discover(classes, require)
    ds.check(strict)
    for n in ds.notes:
        log(f"note: {n}")
    for p in ds.problems:
        log(f"warning: {p}")
    bb = backbone if isinstance(backbone, Backbone) else Backbone(backbone)
    if not bb.spec.accepts(pp.name):
        raise ConfigError(f"backbone {bb.spec.name!r} does not accept preprocessing {pp.name!r}",
                          f"use one of {', '.join(bb.spec.preprocessings)}", param="preprocess")
    pp = Preprocessing(pp.name, bb.spec.input_size)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(out.parent, e, "creating the folder") from None
    root = Path(src.root)
    with sigterm_as_exit(), _lock(out):
        # under the lock no other extract writes this cache: every temp of it is an orphan
        for p in clean_stale(out, only_dead=False):
            log(f"note: removed {p.name}, left by an interrupted run")
        old = _open_old(out, bb, views, force, pp)
        try:
            small = _read_small(old) if old is not None else {}
            old_rows = {(p, s): i for i, (p, s) in enumerate(zip(small.get("index/path", []),
                                                                 small.get("index/source_sha256", [])))}
            with atomic_path(out, "writing the feature cache") as tmp:
                summary = _write(tmp, ds, root, bb, views, old, small, old_rows, strict, batch_size, log,
                                 progress, pp, src)
        finally:
            if old is not None:
                old.close()
    summary.update(seconds=time.perf_counter() - t0, cache=str(out), classes=list(ds.classes), preprocess=pp.name,
                   views=["raw", *views],
                   notes=list(ds.notes), problems=[str(p) for p in ds.problems] + summary["problems"])
    return summary


def _write(tmp, ds, root, bb, views, old, small, old_rows, strict, batch_size, log, progress, pp, src) -> dict:
    all_views = ("raw",) + views
    n = len(ds.samples)
    problems, new_count, reused = [], 0, 0
    spec = bb.spec
    g, d, size = spec.grid, spec.n_features, spec.input_size
    with LatchedFile(tmp) as sink, h5py.File(sink, "w") as f:
        f.attrs.update(backbone_sha256=bb.sha256, backbone_file=bb.path.name, backbone=spec.name,
                       backbone_spec=json.dumps(spec.to_json()),
                       preprocess_version=pp.name, package_version=__version__,
                       views=",".join(all_views), classes=",".join(ds.classes),
                       dataset_root=str(Path(root).resolve()), dataset_source=str(Path(src.path).resolve()),
                       dataset_kind=src.kind, samples_digest=samples_digest(ds))
        ck = {"fletcher32": True}   # every chunk checksummed: a damaged one is an error naming it, never data
        feat = {v: f.create_dataset(f"features/{v}", (0, g, g, d), "f2", maxshape=(None, g, g, d),
                                    chunks=(1, g, g, d), compression="lzf", **ck) for v in all_views}
        pooled = {v: f.create_dataset(f"pooled/{v}", (0, d), "f4", maxshape=(None, d), **ck) for v in all_views}
        grid = {v: f.create_dataset(f"grid/{v}", (0, g, g), "f2", maxshape=(None, g, g), **ck) for v in all_views}
        valid = {v: f.create_dataset(f"valid/{v}", (0,), bool, maxshape=(None,), **ck) for v in all_views}
        m224 = f.create_dataset("mask224", (0, size, size), bool, maxshape=(None, size, size),
                                chunks=(1, size, size), compression="lzf", **ck)
        index = {k: [] for k in ("path", "label", "source_sha256", "content_sha256", "phash",
                                 "has_mask", "width", "height")}
        sources = []
        for s in ds.samples:
            try:
                sources.append(source_sha256(root, s))
            except ImageError as e:
                if strict:
                    raise
                sources.append(None)  # unreadable: skipped like an image that fails to decode
                problems.append(str(e))
                log(f"warning: skipped {e}")
        todo = {i for i in range(n) if sources[i] is not None and (ds.samples[i].path, sources[i]) not in old_rows}
        bar = progress_bar(len(todo), "extracting", progress)

        def append(rows: dict):
            """Append one batch of rows (see _collect) to every dataset."""
            k = len(rows["index"])
            start = m224.shape[0]
            for ds_ in list(feat.values()) + list(pooled.values()) + list(grid.values()) + list(valid.values()) + [m224]:
                ds_.resize(start + k, axis=0)
            for v in all_views:
                feat[v][start:] = rows["feat"][v]   # float16
                pooled[v][start:] = rows["pooled"][v]
                grid[v][start:] = rows["grid"][v]
                valid[v][start:] = rows["valid"][v]
            m224[start:] = rows["mask224"]
            for rec in rows["index"]:
                for key in index:
                    index[key].append(rec[key])
            f.flush()
            sink.check()  # disk full: stop now (atomic_path turns it into one BusiError)

        batches = [list(range(p, min(p + batch_size, n))) for p in range(0, n, batch_size)]
        with ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1))) as pool:
            def submit(batch):  # decoding runs ahead of the backbone by one batch
                return {i: pool.submit(_prepare, root, ds.samples[i], i, views, pp, spec) for i in batch if i in todo}

            pending = submit(batches[0]) if batches else {}
            for k, batch in enumerate(batches):
                futures, pending = pending, (submit(batches[k + 1]) if k + 1 < len(batches) else {})
                items = {}
                for i, fut in futures.items():
                    try:
                        items[i] = fut.result()
                    except (ImageError, OSError, ValueError, MemoryError) as e:
                        if strict:
                            raise
                        p = str(D.file_problem(ds.samples[i].path, e)) if not isinstance(e, ImageError) else str(e)
                        problems.append(p)
                        log(f"warning: skipped {p}")
                feats = _run_backbone(bb, items, all_views, pp)
                rows = _collect(batch, items, feats, old, small, old_rows, ds, sources, all_views, spec)
                if rows["index"]:
                    append(rows)
                new_count += len(items)
                reused += sum(1 for i in batch if i not in futures and sources[i] is not None)
                if bar:
                    bar.update(len(futures))
        if bar:
            bar.render_finish()
        labels = np.array(index["label"], dtype=np.int64)
        patient = {s.path: s.patient for s in ds.samples}
        groups = patient_groups(D.duplicate_groups(index["content_sha256"], index["phash"]),
                                  [patient.get(p) for p in index["path"]])
        str_t = h5py.string_dtype()
        f.create_dataset("index/path", data=np.array(index["path"], dtype=object), dtype=str_t)
        f.create_dataset("index/label", data=labels.astype(np.int8))
        f.create_dataset("index/source_sha256", data=np.array(index["source_sha256"], dtype=object), dtype=str_t)
        f.create_dataset("index/content_sha256", data=np.array(index["content_sha256"], dtype=object), dtype=str_t)
        f.create_dataset("index/phash", data=np.array(index["phash"], dtype=np.uint64))
        f.create_dataset("index/has_mask", data=np.array(index["has_mask"], dtype=bool))
        f.create_dataset("index/group", data=groups)
        f.create_dataset("index/width", data=np.array(index["width"], dtype=np.int32))
        f.create_dataset("index/height", data=np.array(index["height"], dtype=np.int32))
    sink.check()
    return dict(images=len(index["path"]), extracted=new_count, reused=reused,
                counts={c: int((labels == k).sum()) for k, c in enumerate(ds.classes)},
                problems=problems)


def _run_backbone(bb: Backbone, items: dict, all_views, pp: Preprocessing) -> dict:
    """Every prepared input of the batch through the backbone, BACKBONE_BATCH inputs at a time (memory
    stays flat): each chunk's inputs are made float32 only for its run and dropped after it, and its
    float32 features are reduced at once to what is stored. -> {(row, view): (features [G,G,D]
    float16, pooled [D] float32 = mean of the float32 cells)}."""
    keys = [(i, v) for i, it in items.items() for v in all_views if v in it.inputs]
    out = {}
    for s in range(0, len(keys), BACKBONE_BATCH):
        part = keys[s:s + BACKBONE_BATCH]
        y = bb.features(np.stack([pp.intensity(items[i].inputs[v]) for i, v in part]))
        for j, (i, v) in enumerate(part):
            items[i].inputs[v] = None   # the key stays: it says the view exists
            out[(i, v)] = (y[j].astype(np.float16), y[j].reshape(-1, y.shape[-1]).mean(axis=0))
    return out


def _collect(batch, items, feats, old, small, old_rows, ds, sources, all_views, spec: BackboneSpec) -> dict:
    """Assemble one batch of rows in discovery order, from fresh items or the old cache."""
    zero_f = (np.zeros(spec.feature_shape, np.float16), np.zeros(spec.n_features, np.float32))
    zero_g = np.zeros((spec.grid, spec.grid), np.float32)
    rows = {"feat": {v: [] for v in all_views}, "pooled": {v: [] for v in all_views},
            "grid": {v: [] for v in all_views},
            "valid": {v: [] for v in all_views}, "mask224": [], "index": []}
    for i in batch:
        s = ds.samples[i]
        if i in items:
            it = items[i]
            for v in all_views:
                ok = v in it.inputs
                f16, pooled = feats[(i, v)] if ok else zero_f
                rows["feat"][v].append(f16)
                rows["pooled"][v].append(pooled)
                rows["grid"][v].append(it.grids[v] if ok else zero_g)
                rows["valid"][v].append(ok)
            rows["mask224"].append(it.mask224)
            rec = dict(content_sha256=it.content_sha256, phash=it.phash, width=it.size[0], height=it.size[1],
                       has_mask=it.has_mask)
        elif (s.path, sources[i]) in old_rows:
            j = old_rows[(s.path, sources[i])]
            for v in all_views:
                rows["feat"][v].append(_read_old(old, f"features/{v}", j))   # float16 as stored
                rows["pooled"][v].append(small[f"pooled/{v}"][j])  # as stored: reuse is exact
                rows["grid"][v].append(small[f"grid/{v}"][j])
                rows["valid"][v].append(bool(small[f"valid/{v}"][j]))
            rows["mask224"].append(_read_old(old, "mask224", j))
            rec = {k: small[f"index/{k}"][j] for k in ("phash", "width", "height", "has_mask", "content_sha256")}
        else:
            continue  # failed to decode: skipped
        rec.update(path=s.path, label=s.label, source_sha256=sources[i])
        rows["index"].append(rec)
    for key in ("feat", "pooled", "grid", "valid"):
        for v in all_views:
            rows[key][v] = np.array(rows[key][v])
    rows["mask224"] = np.array(rows["mask224"])
    return rows


def _read_old(old: h5py.File, name: str, row: int) -> np.ndarray:
    """One row of the old cache; a damaged chunk -> CacheError (not an OSError traceback)."""
    try:
        return old[name][row]
    except (OSError, KeyError, ValueError) as e:
        raise CacheError(f"{old.filename}: the existing cache is damaged ({name}, row {row}: {e})",
                         REBUILD, param="force") from None


def _read_small(old: h5py.File) -> dict:
    """The old cache's small datasets (index, pooled, grid, valid) in memory: reuse reads
    only the big per-row features and masks from disk."""
    names = []
    old.visit(lambda n: names.append(n) if isinstance(old[n], h5py.Dataset) and not
              n.startswith(("features/", "mask224")) else None)
    try:
        return {n: (old[n].asstr()[:] if old[n].dtype.kind == "O" else old[n][:]) for n in names}
    except (OSError, KeyError, ValueError) as e:
        raise CacheError(f"{old.filename}: the existing cache is damaged ({e})", REBUILD, param="force") from None


class FeatureCache:
    """Read-only view of a feature cache: the index in memory, features on demand.

    Holds ONE open HDF5 handle from construction to :meth:`close` (or the end
    of a ``with`` block), so every read comes from the same file even if the
    path is replaced meanwhile (another extract finishing): never a mix of two
    caches. A damaged dataset raises CacheError saying to rebuild the cache.
    """

    def __init__(self, path=None):
        path = Path(path or os.environ.get(ENV_CACHE) or DEFAULT_CACHE)
        if not path.is_file():
            raise CacheError(f"{path}: feature cache not found",
                             f"extract the dataset's features into it first (or point {ENV_CACHE} at a cache)",
                             param="cache")
        self.path = path
        self._memo = {}
        try:
            self._f = h5py.File(path, "r")
        except OSError as e:
            raise CacheError(f"{path}: not a busi-lite cache ({e})", REBUILD, param="force") from None
        try:
            f = self._f
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            self.paths = list(f["index/path"].asstr()[:])
            self.labels = f["index/label"][:].astype(np.int64)
            self.groups = f["index/group"][:]
            self.has_mask = f["index/has_mask"][:]
            self.content_sha256 = list(f["index/content_sha256"].asstr()[:])
            self.classes = tuple(self.attrs["classes"].split(","))
            self.views = tuple(self.attrs["views"].split(","))
            self.backbone_sha256 = self.attrs["backbone_sha256"]
            self.preprocess_version = self.attrs["preprocess_version"]
            stored = self.attrs.get("backbone_spec")
            stored = None if stored is None else json.loads(stored)
        except (OSError, KeyError, ValueError) as e:
            self._f.close()
            raise CacheError(f"{path}: not a complete busi-lite cache ({e})", REBUILD, param="force") from None
        try:
            self.spec = check_stored(stored)  # BackboneSpec (DEFAULT for caches extracted before specs were stored)
        except ConfigError as e:
            self._f.close()
            raise CacheError(f"{path}: {e.what}", e.fix, param="backbone") from None

    def close(self) -> None:
        """Release the file handle (reads after this raise CacheError)."""
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def split(self, seed: int, test_fraction: float = 0.15) -> D.Split:
        """The group-aware train/test split ``seed`` of this cache's images."""
        return D.split(self.labels, self.groups, self.paths, seed, test_fraction)

    def __len__(self) -> int:
        return len(self.paths)

    def _check_view(self, view):
        if view not in self.views:
            raise CacheError(f"{self.path}: view {view!r} not in cache (has {', '.join(self.views)})",
                             f"extract again with the view {view!r} (and force)", param="views")

    def _read(self, name, rows=None):
        """Whole dataset read once and kept (per instance); rows selected in memory."""
        if name not in self._memo:
            if not self._f.id.valid:
                raise CacheError(f"{self.path}: this FeatureCache was closed", "open the cache again")
            try:
                self._memo[name] = self._f[name][:]
            except (OSError, KeyError, ValueError) as e:
                raise CacheError(f"{self.path}: {name} cannot be read, the cache is damaged ({e})",
                                 REBUILD, param="force") from None
        full = self._memo[name]
        return full if rows is None else full[np.asarray(rows, dtype=np.int64)]

    def pooled(self, view="raw", rows=None) -> np.ndarray:
        """[n,D] float32 globally pooled features."""
        self._check_view(view)
        return self._read(f"pooled/{view}", rows)

    def spatial(self, view="raw", rows=None) -> np.ndarray:
        """[n,G*G,D] float16 per-cell features (the GxG grid flattened row-major)."""
        self._check_view(view)
        x = self._read(f"features/{view}", rows)
        return x.reshape(len(x), self.spec.cells, -1)

    def grid(self, view="raw", rows=None) -> np.ndarray:
        """[n,G*G] float32 lesion fraction per cell."""
        self._check_view(view)
        g = self._read(f"grid/{view}", rows).astype(np.float32)
        return g.reshape(len(g), self.spec.cells)

    def valid(self, view="raw", rows=None) -> np.ndarray:
        self._check_view(view)
        return self._read(f"valid/{view}", rows).astype(bool)

    def mask224(self, rows=None) -> np.ndarray:
        return self._read("mask224", rows)
