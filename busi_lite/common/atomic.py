"""Atomic file writes: the one helper every writer uses.

``with atomic_path(dest) as tmp: write(tmp)`` writes to a unique temp file in
the destination's folder (``.NAME.PID.RANDOM.tmp``), then replaces ``dest`` in
one ``os.replace``. On any failure (including disk full, Ctrl-C, SIGTERM) the
temp file is removed and ``dest`` keeps its old bytes. Disk full and other
OS errors become a one-line :class:`BusiError` naming the path.
Temp files left by a killed process (kill -9) are removed by
:func:`clean_stale` on the next write to the same destination.
:func:`sigterm_as_exit` makes SIGTERM clean up like Ctrl-C for long writers.
:class:`LatchedFile` is the temp file for writers (h5py) that must never see a
failed write: disk full is kept and raised by the caller, not by the library.
:func:`write_lock` is an exclusive, non-blocking lock for writers of one destination
(a second writer is refused at once, told which process holds it).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import io
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from busi_lite.common.errors import BusiError

_TMP_SUFFIX = ".tmp"


def _tmp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.{os.urandom(4).hex()}{_TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(dest, only_dead: bool = True) -> list[Path]:
    """Remove ``.NAME.PID.*.tmp`` files beside ``dest`` whose writing process is gone.

    ``only_dead=False`` removes them whatever their PID: for callers holding a
    lock that proves no one else writes ``dest`` (a PID may have been reused)."""
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    for p in dest.parent.glob(f".{glob.escape(dest.name)}.*{_TMP_SUFFIX}"):
        parts = p.name[len(dest.name) + 2:].split(".")
        if len(parts) >= 2 and parts[0].isdigit() and (not only_dead or not _pid_alive(int(parts[0]))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def os_error(path, e: OSError, doing: str = "writing") -> BusiError:
    """An OSError while writing ``path`` -> a one-line BusiError."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BusiError(f"{path}: disk full while {doing}", "free some space or write elsewhere; "
                         "the old file (if any) is unchanged")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BusiError(f"{path}: no permission for {doing} ({e.strerror})",
                         "choose a folder you can write to")
    return BusiError(f"{path}: {doing} failed ({e.strerror or e})", "check the disk and the path")


@contextmanager
def atomic_path(dest, doing: str = "writing"):
    """Yield a temp path beside ``dest``; on success it replaces ``dest`` atomically."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(dest.parent, e, "creating the folder") from None
    clean_stale(dest)
    tmp = _tmp_name(dest)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except OSError as e:
        raise os_error(dest, e, doing) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM raises SystemExit(143) in the main thread, so
    cleanup (``finally``, :func:`atomic_path`) runs as it does for Ctrl-C.
    The previous handler is restored on exit; outside the main thread this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LatchedFile(io.RawIOBase):
    """A new binary file for libraries that must never see a failed write (h5py's
    'fileobj' driver: after a failed native write h5py crashes the interpreter at exit).

    The first OS error of a write (disk full) is kept in ``error`` and every later
    write is dropped, so the library can still close cleanly; the caller calls
    :meth:`check` (raises that error) after each step and after closing.
    """

    def __init__(self, path: Path):
        super().__init__()
        self._f = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self._f.seek(pos, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, b):
        return self._f.readinto(b)

    def write(self, b):
        n = len(memoryview(b).cast("B"))
        if self.error is None:
            try:
                view, done = memoryview(b).cast("B"), 0
                while done < n:  # a raw write may be short when the disk fills up
                    k = self._f.write(view[done:])
                    if not k:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += k
            except OSError as e:
                self.error = e
        return n

    def truncate(self, size=None):
        if self.error is None:
            try:
                return self._f.truncate(size)
            except OSError as e:
                self.error = e
        return size

    def flush(self):
        pass  # unbuffered; atomic_path fsyncs the finished file

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()

    def check(self):
        if self.error is not None:
            raise self.error


class LockBusy(BusiError):
    """Another process holds a :func:`write_lock`; ``holder`` is its PID (None if unknown)."""

    def __init__(self, what: str, fix: str, holder: int | None):
        super().__init__(what, fix)
        self.holder = holder


@contextmanager
def write_lock(lock_path, what: str, remove: bool = False, busy=LockBusy):
    """Hold an exclusive lock on ``lock_path`` (created if needed; it records the holder's PID)
    for the block. Raises ``busy(what, fix, holder)`` (default LockBusy) at once, naming the
    holder's PID, when another process (or another open of the same file) holds it. ``what``:
    what is being written, for the message. ``remove``: delete the lock file when the block ends
    (still held then: a run that opened it before is refused, a later one makes its own)."""
    lock_path = Path(lock_path)
    try:
        f = open(lock_path, "a+")
    except OSError as e:
        raise os_error(lock_path, e, "creating the lock file") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read(32).strip()
            holder = int(text) if text.isdigit() else None
            raise busy(f"{what}: another busi-lite run (pid {holder if holder else '?'}) is writing it; "
                       f"this run (pid {os.getpid()}) lost and wrote nothing",
                       "wait for the other run to finish, or write elsewhere", holder) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        except OSError:
            pass                    # the PID is for messages only
        try:
            yield
        finally:
            if remove:
                lock_path.unlink(missing_ok=True)


def write_bytes(dest, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))
