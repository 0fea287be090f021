"""Fault tests for the data and feature-cache layer (issue 9: items 2, 3, 4, 9).

Each test failed on the code before the fix (see the docstrings): a cache
replaced while read, bad files (FIFO, symlinks, unreadable, decompression
bomb), disk full, kill -9 leftovers, SIGTERM, a damaged HDF5 chunk,
discovery oddities, 12-bit PNGs, CLI flags named in library messages.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import hashlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from synth import make_busi_tree, make_tiny_onnx

from busi_lite.common import atomic
from busi_lite.common.errors import BusiError, ImageError
from busi_lite.features import cache as F
from busi_lite.io import data as D
from busi_lite.io.imread import read_gray, read_rgb

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers
def _extract(root, out, backbone, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda msg: None)
    return F.extract(root, out, backbone=backbone, **kw)


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _temps(directory) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


@contextlib.contextmanager
def _deadline(seconds: int):
    """Turn a hang (the old code blocked forever on a FIFO) into a test failure."""
    def boom(*_):
        raise TimeoutError(f"still running after {seconds} s: something blocks")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bomb_png(path: Path, side: int = 50_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return path


@contextlib.contextmanager
def _unreadable(target: Path):
    """Opening ``target`` fails with EACCES (tests run as root, where chmod 000 does not stop reads)."""
    target = os.path.realpath(target)
    real_os_open, real_open = os.open, builtins.open

    def denied(path):
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)) == target

    def os_open(path, *a, **k):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_os_open(path, *a, **k)

    def py_open(file, *a, **k):
        if denied(file):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
        return real_open(file, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "open", os_open)
    mp.setattr(builtins, "open", py_open)
    mp.setattr(io, "open", py_open)
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "busi"
    info = make_busi_tree(root, n_per_class=(3, 4, 3), seed=0, extras=False)
    return root, info


# --------------------------------------------------------------------------- 9.2 cache replaced while read
def test_cache_replaced_while_reading_is_never_mixed(tree, tmp_path, tiny_backbone):
    """Before: FeatureCache re-opened the file by path per read, so after an
    extract --force replaced it, spatial() returned the NEW file's features."""
    root, _ = tree
    out = tmp_path / "c.h5"
    _extract(root, out, tiny_backbone, views=())
    with h5py.File(out, "r") as f:
        first_spatial = f["features/raw"][:]
        first_mask = f["mask224"][:]
    cache = F.FeatureCache(out)
    cache.pooled("raw")                               # index and one dataset read, the rest later
    other = make_tiny_onnx(tmp_path / "other.onnx", seed=1)
    _extract(root, out, other, views=(), force=True)  # replaces the file under the reader
    with h5py.File(out, "r") as f:
        assert not np.array_equal(f["features/raw"][:], first_spatial), "the second cache must differ"
    np.testing.assert_array_equal(cache.spatial("raw").reshape(first_spatial.shape), first_spatial)
    np.testing.assert_array_equal(cache.mask224(), first_mask)
    cache.close()
    with pytest.raises(F.CacheError, match="closed"):
        cache.grid("raw")
    with F.FeatureCache(out) as fresh:               # a new reader sees the new cache
        assert fresh.backbone_sha256 == _sha(other)


# --------------------------------------------------------------------------- 9.3 one bad file
def _bad_files(root: Path) -> dict:
    """Plant every kind of bad file in benign/ and return {rel path: kind}."""
    b = root / "benign"
    os.symlink(root / "nowhere.png", b / "dangling.png")
    os.symlink(b / "loop.png", b / "loop.png")
    os.mkfifo(b / "fifo.png")
    return {"benign/dangling.png": "dangling symlink", "benign/loop.png": "symlink loop",
            "benign/fifo.png": "FIFO"}


def test_discover_names_bad_entries_and_keeps_the_rest(tree):
    """Before: dangling links/loops/FIFOs were taken as images (and later crashed or hung)."""
    root, info = tree
    bad = _bad_files(root)
    ds = D.discover(root)
    probs = {p.path: p for p in ds.problems}
    for rel, kind in bad.items():
        assert rel in probs and kind in probs[rel].what and not probs[rel].fatal, (rel, probs.get(rel))
    assert ds.counts() == info["counts"]
    ds.check()  # not fatal


def test_unlistable_class_folder_is_a_fatal_problem(tree, monkeypatch):
    """A class folder that cannot be listed is never dropped silently (nor a traceback)."""
    root, _ = tree
    real = Path.iterdir

    def iterdir(self):
        if self.name == "benign":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    ds = D.discover(root)
    probs = [p for p in ds.problems if p.path == "benign/"]
    assert len(probs) == 1 and probs[0].fatal and "cannot be listed" in probs[0].what
    assert ds.classes == ("normal", "malignant")
    with pytest.raises(D.DatasetError, match="benign"):
        ds.check()


def test_reading_never_blocks_on_a_fifo_and_names_the_file(tree):
    """Before: read_rgb and source_sha256 opened a FIFO named .png and blocked forever."""
    root, _ = tree
    os.mkfifo(root / "benign" / "fifo.png")
    with _deadline(20):
        with pytest.raises(ImageError, match=r"fifo\.png.*not a regular file \(a FIFO\)"):
            read_rgb(root / "benign" / "fifo.png")
        with pytest.raises(ImageError, match="FIFO"):
            F.source_sha256(root, D.Sample("benign/fifo.png", 0))
        with pytest.raises(ImageError, match="FIFO"):
            read_gray(root / "benign" / "fifo.png")


def test_files_turned_bad_after_discovery_are_problems(tree, tmp_path, tiny_backbone):
    """Files that change between discovery and reading (FIFO, dangling link, unreadable,
    decompression-bomb mask): data.inspect and extract name each one and process the rest.
    Before: inspect hung on the FIFO; extract died in source_sha256 (outside the per-file
    handling) or on the bomb's uncaught DecompressionBombError."""
    root, _ = tree
    ds = D.discover(root)
    n = len(ds.samples)
    b = root / "benign"
    (b / "benign (1).png").unlink()
    os.mkfifo(b / "benign (1).png")                             # image became a FIFO
    (b / "benign (2).png").unlink()
    os.symlink(root / "gone.png", b / "benign (2).png")         # image became a dangling link
    _bomb_png(root / "malignant" / "malignant (1)_mask.png")    # mask is a decompression bomb
    unreadable = root / "malignant" / "malignant (2).png"
    bad = {"benign/benign (1).png", "benign/benign (2).png", "malignant/malignant (1).png",
           "malignant/malignant (2).png"}
    with _deadline(60), _unreadable(unreadable):
        inv = D.inspect(ds)
        msgs = []
        s = _extract(root, tmp_path / "c.h5", tiny_backbone, views=(), log=msgs.append)
    named = {p["path"] for p in inv["problems"]}
    assert bad <= named, named
    assert sum(inv["counts"].values()) == n - len(bad)
    assert s["images"] == n - len(bad)
    for rel in bad:
        assert any(rel.split("/")[1].split(".")[0] in p for p in s["problems"]), (rel, s["problems"])
    assert any("decompression bomb" in p for p in s["problems"])
    with F.FeatureCache(tmp_path / "c.h5") as cache:
        assert not bad & set(cache.paths) and len(cache) == n - len(bad)
    assert _temps(tmp_path) == []


def test_decompression_bomb_mask_is_an_image_error(tmp_path):
    """Before: data._read_gray (now imread.read_gray) had no pixel limit: DecompressionBombError escaped."""
    p = _bomb_png(tmp_path / "x_mask.png")
    assert p.stat().st_size < 100
    with pytest.raises(ImageError, match="x_mask.png"):
        read_gray(p)
    with pytest.raises(ImageError, match="x_mask.png"):
        read_rgb(p)


# --------------------------------------------------------------------------- 9.4 disk full
_EXTRACT_SCRIPT = """
import sys
from busi_lite.features import cache as F
from busi_lite.common.errors import BusiError
root, out, bb, views = sys.argv[1:5]
try:
    F.extract(root, out, backbone=bb, views=tuple(v for v in views.split(",") if v), force=True,
              progress=False, log=lambda m: None)
except BusiError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
"""


def _run_extract(root, out, bb, views: str, timeout=240):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _EXTRACT_SCRIPT, str(root), str(out), str(bb), views],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


@contextlib.contextmanager
def _tiny_fs(directory: Path, size_kb: int):
    """A size-limited tmpfs at ``directory`` (root only); yields False when mounting is not allowed."""
    directory.mkdir(parents=True, exist_ok=True)
    ok = shutil.which("mount") and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(directory)],
        capture_output=True, check=False).returncode == 0
    try:
        yield bool(ok)
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def test_disk_full_is_one_line_and_keeps_the_old_cache(tree, tmp_path, tiny_backbone, monkeypatch):
    """Before: ENOSPC printed an h5py traceback and the process then segfaulted (exit 139),
    leaving the temp file. After: exit 1 with one line naming the cache, temp removed,
    old cache byte-identical. Uses a real tiny tmpfs when the machine allows it."""
    root, _ = tree
    small = tmp_path / "small.h5"
    _extract(root, small, tiny_backbone, views=())
    big = tmp_path / "big.h5"
    _extract(root, big, tiny_backbone, views=("roi", "masked", "mask"))  # the views the full-disk run asks for
    need_small, need_big = small.stat().st_size, big.stat().st_size
    assert need_big > 2 * need_small
    fs = tmp_path / "fs"
    # room for the old (small) cache and about half of the new (big) one
    with _tiny_fs(fs, (need_small + need_big // 2) // 1024 + 8) as mounted:
        if mounted:
            print("disk full: real tmpfs")
            out = fs / "c.h5"
            shutil.copy(small, out)
            before = _sha(out)
            r = _run_extract(root, out, tiny_backbone, "roi,masked,mask")
            lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
            assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
            assert len(lines) == 1 and "disk full" in lines[0] and str(out) in lines[0], r.stderr
            assert _sha(out) == before
            assert _temps(fs) == []
            return
    # fallback (no tmpfs): the HDF5 write path raises ENOSPC
    print("disk full: simulated (no tmpfs)")
    out = tmp_path / "c.h5"
    shutil.copy(small, out)
    before = _sha(out)

    real_write = atomic.LatchedFile.write

    def full(self, b):  # the first write past 4 kB fails as on a full disk
        if self._f.tell() > 4096 and self.error is None:
            self.error = OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, b)

    monkeypatch.setattr(atomic.LatchedFile, "write", full)
    with pytest.raises(BusiError, match="disk full"):
        _extract(root, out, tiny_backbone, force=True)
    assert _sha(out) == before and _temps(tmp_path) == []


# --------------------------------------------------------------------------- 9.9 kill -9, SIGTERM, damaged chunk
def test_orphaned_temps_are_removed_by_the_next_extract(tree, tmp_path, tiny_backbone):
    """Before: `.NAME.PID.tmp` left by kill -9 stayed forever."""
    root, _ = tree
    out = tmp_path / "c.h5"
    dead = tmp_path / ".c.h5.999999999.tmp"            # old naming, a PID that cannot exist
    reused = tmp_path / f".c.h5.{os.getppid()}.abcd1234.tmp"  # a live (reused) PID: the lock proves it stale
    other = tmp_path / ".d.h5.999999999.tmp"           # another file's temp is not ours to remove
    for p in (dead, reused, other):
        p.write_bytes(b"partial")
    _extract(root, out, tiny_backbone, views=())
    assert not dead.exists() and not reused.exists() and other.exists()
    # the atomic helper alone removes only temps of dead writers
    live = tmp_path / f".x.json.{os.getpid()}.ffff0000.tmp"
    gone = tmp_path / ".x.json.999999999.ffff0000.tmp"
    live.write_bytes(b"")
    gone.write_bytes(b"")
    assert atomic.clean_stale(tmp_path / "x.json") == [gone] and live.exists()


_SIGTERM_SCRIPT = """
import sys, time
from busi_lite.features import cache as F
root, out, bb = sys.argv[1:4]
real = F._run_backbone
calls = []
def slow(*a, **k):
    calls.append(1)
    if len(calls) == 2:
        print("READY", flush=True)
        time.sleep(60)
    return real(*a, **k)
F._run_backbone = slow
F.extract(root, out, backbone=bb, views=(), force=True, batch_size=4, progress=False, log=lambda m: None)
print("FINISHED", flush=True)
"""


def test_sigterm_during_extract_cleans_up_like_ctrl_c(tree, tmp_path, tiny_backbone):
    """Before: SIGTERM killed extract outright: the temp file stayed (exit -15)."""
    root, _ = tree
    out = tmp_path / "c.h5"
    _extract(root, out, tiny_backbone, views=())
    before = _sha(out)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(root), str(out), str(tiny_backbone)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "READY", p.stderr.read()
        assert _temps(tmp_path), "the run must be writing its temp file when signalled"
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 128 + signal.SIGTERM, (rc, p.stderr.read()[-2000:])
    assert _sha(out) == before
    assert _temps(tmp_path) == []


def _damage_chunk(path: Path, name: str = "features/raw", chunk: int = 1) -> None:
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 4)
        fh.write(b"\xff" * max(1, info.size - 8))


def test_damaged_chunk_says_rebuild(tree, tmp_path, tiny_backbone):
    """Before: a damaged HDF5 chunk raised a bare OSError traceback."""
    root, _ = tree
    out = tmp_path / "c.h5"
    _extract(root, out, tiny_backbone, views=())
    _damage_chunk(out)
    damaged = _sha(out)
    cache = F.FeatureCache(out)
    cache.pooled("raw")  # undamaged datasets still read
    with pytest.raises(F.CacheError) as e:
        cache.spatial("raw")
    cache.close()
    msg = str(e.value)
    assert "damaged" in msg and "rebuild the cache (extract with force)" in msg and "--" not in msg
    assert e.value.param == "force"
    with pytest.raises(F.CacheError, match="damaged"):
        _extract(root, out, tiny_backbone, views=())   # incremental reuse reads the damaged rows
    assert _sha(out) == damaged and _temps(tmp_path) == []
    _extract(root, out, tiny_backbone, views=(), force=True)  # the fix the message gives works
    with F.FeatureCache(out) as cache:
        assert cache.spatial("raw").shape[0] == len(cache)


# --------------------------------------------------------------------------- 9.9 discovery
def test_discovery_reports_same_stem_case_insensitive_masks_and_unknown_folders(tree):
    """Before: x.jpg beside x.png was silently dropped, x_Mask.png counted as an image,
    unknown folders and sub-folders silently ignored."""
    root, info = tree
    b = root / "benign"
    Image.open(b / "benign (1).png").convert("RGB").save(b / "benign (1).jpg")
    shutil.move(b / "benign (2)_mask.png", b / "benign (2)_Mask.png")
    (root / "Benign_extra").mkdir()
    (root / "Normal").mkdir()
    (b / "more").mkdir()
    ds = D.discover(root)
    probs = {p.path: p for p in ds.problems}
    assert "benign/benign (1).jpg" in probs and "benign/benign (1).png" in probs["benign/benign (1).jpg"].what
    assert "Benign_extra/" in probs and "not a class folder" in probs["Benign_extra/"].what
    assert "Normal/" in probs and "rename it to normal/" in probs["Normal/"].fix
    assert "benign/more/" in probs
    assert not any(p.fatal for p in ds.problems)
    s = next(s for s in ds.samples if s.path == "benign/benign (2).png")
    assert s.mask_paths == ("benign/benign (2)_Mask.png",)
    assert "benign/benign (2)_Mask.png" not in [x.path for x in ds.samples]
    assert ds.counts() == info["counts"]
    with pytest.raises(D.DatasetError):
        ds.check(strict=True)  # --strict semantics kept: every problem is an error


@pytest.mark.parametrize("name, is_mask", [
    ("x_mask.png", True), ("x_Mask.png", True), ("x_MASK_2.PNG", True), ("dir/x_mask_1.jpg", True),
    ("x.png", False), ("x_masked.png", False), ("mask.png", False), ("x_mask_a.png", False)])
def test_one_mask_file_rule(name, is_mask):
    assert D.is_mask_file(name) is is_mask


def test_predict_folder_expansion_uses_the_one_mask_rule(tmp_path):
    """predict's folder expansion must skip exactly the files discovery calls masks."""
    from busi_lite.serving import inference

    for name in ("a.png", "a_Mask.png", "b_mask_1.png", "c_masked.png"):
        Image.new("L", (8, 8)).save(tmp_path / name)
    paths, errors = inference.expand_inputs([tmp_path])
    assert sorted(p.name for p in paths) == ["a.png", "c_masked.png"] and not errors


# --------------------------------------------------------------------------- 9.9 12-bit PNG
def test_12bit_data_in_16bit_png_uses_its_bit_depth(tmp_path):
    """Before: divided by 257, so 12-bit data (max 4095) came out nearly black (max 16)."""
    a = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    p = tmp_path / "x12.png"
    Image.fromarray(a).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    rgb = read_rgb(p)
    assert rgb.max() == 255 and rgb[..., 0].min() == 0
    np.testing.assert_array_equal(rgb[..., 0], np.round(a * 255.0 / 4095).astype(np.uint8))
    full = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)   # max 65520: 16-bit data
    Image.fromarray(full).save(p)
    np.testing.assert_array_equal(read_rgb(p)[..., 0], np.round(full / 257.0).astype(np.uint8))


# --------------------------------------------------------------------------- messages
@pytest.mark.parametrize("module", ["io/data.py", "features/cache.py", "features/views.py", "common/atomic.py"])
def test_library_messages_name_no_cli_flags(module):
    """Library messages say the fix in words; the CLI adds its option names."""
    tree = ast.parse((REPO / "busi_lite" / module).read_text())
    flags = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            flags += [w for w in node.value.split() if w.startswith("--") and w[2:3].isalpha()]
    assert flags == [], f"{module} names CLI flags: {flags}"
