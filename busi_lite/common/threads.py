"""BLAS threads chosen by the program (threadpoolctl), not by the user's environment.

Why one thread by default: the heads' matrix products are small (a batch of 32 x 1280
features times 1280 x 100 weights is ~4 MFLOP, tens of microseconds on one core). With
NumPy's default, OpenBLAS starts one thread per core for each of them; its threads
busy-wait for each other, so on a 2-core laptop where another program holds one core,
every product waits for a thread the OS has put to sleep. On such a machine
`busi-lite train --lr 1e-4 --batch 32` took 78 s with the default threads and 5.8 s with
one (benchmarks/bench_busy.py measures it). One thread is never slower
here because there is nothing to split: the cost is memory traffic and Python overhead.

Contract:
  limit_blas(n=None) -> threadpoolctl.threadpool_limits
    limits this process's BLAS pools (OpenBLAS, MKL, BLIS) to ``n`` threads
    (default DEFAULT_BLAS_THREADS = 1); a context manager (``with limit_blas(): ...``
    restores the previous limits on exit) or, called on its own, a setting kept until
    ``.restore_original_limits()``. It overrides OPENBLAS_NUM_THREADS & co.
  limit_blas_at_start(n=None) -> a context manager
    the same limit for a process that has not imported NumPy yet (the CLI): the BLAS
    library reads its thread count from the environment when NumPy loads it, so
    OPENBLAS_NUM_THREADS & co. are set to ``n`` for that moment only (restored after:
    child processes see the user's environment); no BLAS thread is started and
    threadpoolctl is not loaded. NumPy already imported: ``limit_blas(n)``.
  blas_pools() -> list[BlasPool]   what is loaded now and its current thread count.
limit_blas imports NumPy first (threadpoolctl finds the libraries already loaded).
onnxruntime's own threads (the backbone) are not BLAS threads: they are set by
``Backbone(threads=...)``.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
from dataclasses import asdict, dataclass

from busi_lite.common.errors import ConfigError

DEFAULT_BLAS_THREADS = 1
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")  # read by each library as it loads


@dataclass(frozen=True)
class BlasPool:
    """One loaded BLAS library, as threadpoolctl reports it."""
    library: str            # internal_api: "openblas", "mkl", "blis"
    version: str | None
    threads: int            # its current thread count
    threading_layer: str | None
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_threads(n, param: str = "blas_threads") -> int:
    """``n`` as an int >= 1, else a ConfigError naming ``param``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:   # int, numpy integers
        raise ConfigError(f"{param} must be a whole number >= 1, got {n!r}",
                          "pass 1 (the default, best for small matrices on a busy machine) or more",
                          param=param)
    return int(n)


def limit_blas(n: int | None = None):
    """Limit this process's BLAS thread pools to ``n`` (default DEFAULT_BLAS_THREADS)."""
    import numpy  # noqa: F401 - loads the BLAS library that threadpoolctl must see
    from threadpoolctl import threadpool_limits

    n = DEFAULT_BLAS_THREADS if n is None else check_threads(n)
    return threadpool_limits(limits=n, user_api="blas")


def limit_blas_at_start(n: int | None = None):
    """:func:`limit_blas` through the environment when NumPy is not loaded yet (module docstring)."""
    n = DEFAULT_BLAS_THREADS if n is None else check_threads(n)
    if "numpy" in sys.modules:
        return limit_blas(n)
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update(dict.fromkeys(BLAS_ENV, str(n)))
    try:
        import numpy  # noqa: F401 - its BLAS library starts with n threads
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return contextlib.nullcontext()


def blas_pools() -> list[BlasPool]:
    """The BLAS libraries loaded in this process and their current thread counts."""
    from threadpoolctl import threadpool_info

    return [BlasPool(library=p.get("internal_api", "?"), version=p.get("version"),
                     threads=int(p.get("num_threads", 0)), threading_layer=p.get("threading_layer"),
                     path=p.get("filepath", ""))
            for p in threadpool_info() if p.get("user_api") == "blas"]
