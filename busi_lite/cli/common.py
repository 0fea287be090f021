"""What every CLI command shares: output, logging, error handling, option types, progress.

Commands import this module, never the package ``busi_lite.cli`` (no import cycle).
Errors: every :class:`busi_lite.common.errors.BusiError` (and the older per-module error
types) print as ``error: what -> fix`` with exit code 2, no traceback; when the error
names a library parameter (``param``), the CLI option for it is printed too
(:data:`PARAM_OPTIONS` and the declared parameters' flags: ``lr`` -> ``--lr``). Library messages never name CLI flags.
"""

from __future__ import annotations

import errno
import math
import os
import re
import sys
import time

import click

from busi_lite.common.errors import BusiError
from busi_lite.common.progress import clock_text

ENV_DATA = "BUSI_LITE_DATA"

# library parameter -> CLI option (for errors carrying ``param``); the declared training
# parameters' options are generated (busi_lite.cli.options.declared_flags)
PARAM_OPTIONS = {
    "batch_size": "--batch", "heads": "--heads", "name": "--name", "seed": "--seed", "seeds": "--seeds", "only": "--only",
    "fractions": "--fractions", "fraction": "--fractions", "far_cap": "--far-cap", "target_recall": "--target-recall",
    "threshold_malignant": "--threshold-malignant", "low_confidence_threshold": "--low-confidence",
    "lesion_threshold": "--lesion-threshold", "ood_threshold": "--ood-threshold", "backbone": "--backbone",
    "model": "--model", "cache": "--cache", "data": f"--data (or ${ENV_DATA})", "out": "--out",
    "force": "--force", "curves": "--curves", "n_lesions": "--lesion-images", "classes": "--classes",
    "strict": "--strict", "overlay_dir": "--overlay",
}


def log(msg: str) -> None:
    """Progress and notes go to stderr; results to stdout."""
    click.echo(msg, err=True)


def dump(obj, path=None) -> str:
    """Strict JSON text of ``obj`` (NaN -> null); also written atomically to ``path`` when given."""
    from busi_lite.common.jsonio import dumps, write

    if path:
        write(path, obj)
    return dumps(obj)


def fail(msg: str, code: int = 2):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


# what the CLI adds to an error about a parameter: the command that makes the missing thing
PARAM_HINTS = {
    "cache": "a feature cache is made by `busi-lite extract --data DIR --out CACHE`",
    "model": "a model is made by `busi-lite train` or `busi-lite select`",
}


def error_text(e: Exception) -> str:
    """'what -> fix', with the CLI option (and a hint) when the error names a parameter."""
    text = str(e)
    param = getattr(e, "param", None) or ""
    opt = PARAM_OPTIONS.get(param)
    if not opt and param:
        from busi_lite.cli.options import declared_flags  # the generated options (imports the heads)

        opt = declared_flags().get(param)
    if not opt:
        return text
    hint = PARAM_HINTS.get(param)
    return f"{opt}: {text}" + (f" ({hint})" if hint and "not found" in text else "")


def _known_errors() -> tuple:
    """User-facing errors, printed without a traceback: every busi-lite error type derives
    from BusiError (nothing else is imported for this: a command's exit stays cheap)."""
    return (BusiError, ValueError)


class BusiGroup(click.Group):
    """A click group that turns known errors into one line ``error: ...`` and exit code 2."""

    def invoke(self, ctx):
        from busi_lite.common.threads import limit_blas_at_start

        try:
            # The heads' matrices are small: one BLAS thread for every command (common/threads.py);
            # set before NumPy loads (this module imports no NumPy: the verbs import it)
            with limit_blas_at_start(ctx.params.get("blas_threads")):
                out = super().invoke(ctx)
            sys.stdout.flush()               # a full disk is reported here, not at interpreter exit
            return out
        except _known_errors() as e:
            fail(error_text(e))
        except SystemExit:
            _flush_or_fail()
            raise
        except OSError as e:
            if e.errno not in _OUTPUT_ERRNOS:
                raise
            _output_failed(e)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EFBIG}


def _flush_or_fail() -> None:
    try:
        sys.stdout.flush()
    except OSError as e:
        if e.errno not in _OUTPUT_ERRNOS:
            raise
        _output_failed(e)


def _output_failed(e: OSError):
    """The standard output cannot take the output (disk full, closed pipe): one line, exit 2."""
    try:
        sys.stdout = open(os.devnull, "w")   # nothing more reaches the broken stream at exit
    except OSError:
        pass
    what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else (e.strerror or str(e))
    fail(f"standard output: {what} while writing the results -> free some space, or write them elsewhere")


# ---------------------------------------------------------------- option types

class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (a NaN passes every comparison)."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def fraction(text: str) -> float:
    v = float(text)
    if not (math.isfinite(v) and 0 < v <= 1):
        raise ValueError("a training fraction must be in (0, 1]")
    return v


class NameType(click.ParamType):
    """A model name: letters, digits and ._+-, not starting with a dot (never a path)."""
    name = "NAME"
    RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")

    def convert(self, value, param, ctx):
        if not self.RE.fullmatch(str(value)) or len(str(value)) > 120:
            self.fail(f"{value!r} is not a plain model name (letters, digits and . _ + -, no folders); "
                      "use --out to choose the folder", param, ctx)
        return str(value)


# ---------------------------------------------------------------- progress

class Progress:
    """Run counter and ETA for long loops: ``tick()`` after each run, ``prefix(msg)`` for log lines.

    The ETA is the mean time per finished run times the runs left."""

    def __init__(self, total: int, clock=time.perf_counter):
        self.total, self.done, self.clock = int(total), 0, clock
        self.t0 = clock()

    def tick(self) -> None:
        self.done += 1

    def prefix(self, msg: str) -> str:
        elapsed = self.clock() - self.t0
        if self.done:
            eta = clock_text(elapsed / self.done * max(self.total - self.done, 0))
        else:
            eta = "?"
        return f"[{self.done}/{self.total} {clock_text(elapsed)} elapsed, ETA {eta}] {msg}"
