"""Shared plumbing of the benchmarks: asset paths, machine/library info, measured
subprocesses (wall time, peak RSS, CPU taken by other processes), tables, JSON results.

Peak memory is the peak RSS of ONE child process, read with os.wait4() (its own
rusage, not the cumulative RUSAGE_CHILDREN of everything this script ever ran).
The child is started from a tiny launcher interpreter, never straight from the
benchmark script: Linux charges a vfork()/exec'd child with the peak RSS of the
process it was forked from (exec_mmap records the old mm's high-water mark), so a
child forked straight from a benchmark that holds a model or a cache in memory
would report the parent's peak, not its own.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "datasets" / "busi"
DEFAULT_BACKBONE = SHARED / "backbones" / "mobilenet_v2_035_224.onnx"
ENV_DATA, ENV_BACKBONE = "BUSI_LITE_DATA", "BUSI_LITE_BACKBONE"


# ---------------------------------------------------------------- assets
def add_asset_args(p: argparse.ArgumentParser, data=True, backbone=True) -> None:
    if data:
        p.add_argument("--data", help=f"BUSI root (default ${ENV_DATA}, then {DEFAULT_DATA})")
    if backbone:
        p.add_argument("--backbone", help=f"ONNX backbone (default ${ENV_BACKBONE}, then {DEFAULT_BACKBONE})")


def resolve(arg, env: str, default: Path, what: str, is_dir: bool) -> Path:
    for cand, src in ((arg, "option"), (os.environ.get(env), f"${env}"), (str(default), "default")):
        if cand:
            p = Path(cand).expanduser().resolve()
            if (p.is_dir() if is_dir else p.is_file()):
                return p
            if src != "default":
                sys.exit(f"error: {what} {p} (from {src}) not found")
    sys.exit(f"error: no {what}: pass the option or set ${env} (default {default} does not exist)")


def data_path(args) -> Path:
    return resolve(getattr(args, "data", None), ENV_DATA, DEFAULT_DATA, "dataset folder", True)


def backbone_path(args) -> Path:
    return resolve(getattr(args, "backbone", None), ENV_BACKBONE, DEFAULT_BACKBONE, "backbone", False)


# ---------------------------------------------------------------- machine
def machine() -> dict:
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k in ("model name", "cpu MHz", "cache size") and k not in cpu:
                cpu[k] = v
            if k == "flags" and "flags" not in cpu:
                cpu["flags"] = " ".join(f for f in v.split() if f.startswith(("avx", "fma", "sse4")))
    except OSError:
        pass
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": cpu.get("model name", platform.processor()), "cpu_mhz": cpu.get("cpu MHz"),
            "cpu_cache": cpu.get("cache size"), "cpu_simd_flags": cpu.get("flags"),
            "cores": os.cpu_count(), "cores_usable": usable,
            "ram_gb": round(mem_kb / 1024 ** 2, 1) if mem_kb else None, "os": os_name,
            "python": platform.python_version()}


def versions(extra=()) -> dict:
    import importlib

    out = {}
    for mod, name in (("numpy", "numpy"), ("onnxruntime", "onnxruntime"), ("h5py", "h5py"), ("PIL", "pillow"),
                      ("busi_lite", "busi_lite")) + tuple(extra):
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception:  # not installed: say so
            out[name] = None
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except Exception:
        pass
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts") if np.lib.NumpyVersion(np.__version__) >= "1.26.0" else None
        if cfg:
            out["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    except Exception:
        pass
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def header(argv=None, extra_versions=()) -> dict:
    argv = sys.argv if argv is None else argv
    return {"command": "python " + shlex.join([os.path.relpath(argv[0], REPO)] + list(argv[1:])),
            "cwd": os.getcwd(), "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions(extra_versions), "loadavg_start": loadavg()}


# ---------------------------------------------------------------- measured subprocess
_LAUNCHER = r"""
import json, os, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / tick     # all but idle and iowait, seconds of CPU
la0, b0, t0 = os.getloadavg(), busy(), time.perf_counter()
p = subprocess.Popen(cmd)
_, status, ru = os.wait4(p.pid, 0)
wall, b1, la1 = time.perf_counter() - t0, busy(), os.getloadavg()
cpu = ru.ru_utime + ru.ru_stime
json.dump({"returncode": os.waitstatus_to_exitcode(status), "wall_s": wall, "peak_rss_mb": ru.ru_maxrss / 1024,
           "cpu_s": cpu, "other_cpu_cores": max(0.0, (b1 - b0) - cpu) / wall if wall > 0 else 0.0,
           "loadavg_before": [round(x, 2) for x in la0], "loadavg_after": [round(x, 2) for x in la1]}, open(out, "w"))
"""


# ---------------------------------------------------------------- quiet machine
QUIET = {"max_wait": float(os.environ.get("BENCH_QUIET_WAIT", 300)), "threshold": 0.5}


def add_quiet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet-wait", type=float, default=QUIET["max_wait"],
                   help="before each measurement wait up to this many seconds for other processes to use "
                        f"< {QUIET['threshold']} cores (0: don't wait; default $BENCH_QUIET_WAIT or 300)")


def configure(args) -> None:
    if getattr(args, "quiet_wait", None) is not None:
        QUIET["max_wait"] = args.quiet_wait


def busy_cores(window: float = 2.0) -> float:
    """Mean number of cores busy (all processes) over ``window`` seconds, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")

    def busy():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / tick

    b0, t0 = busy(), time.perf_counter()
    time.sleep(window)
    return (busy() - b0) / (time.perf_counter() - t0)


def wait_quiet() -> dict:
    """Wait (up to QUIET['max_wait'] s) until the other processes use < QUIET['threshold'] cores."""
    t0 = time.perf_counter()
    b = busy_cores()
    announced = False
    while b >= QUIET["threshold"] and time.perf_counter() - t0 < QUIET["max_wait"]:
        if not announced:
            log(f"  machine busy ({b:.2f} cores used by others); waiting up to {QUIET['max_wait']:.0f}s ...")
            announced = True
        time.sleep(8)
        b = busy_cores()
    return {"waited_s": round(time.perf_counter() - t0, 1), "busy_cores_before": round(b, 2),
            "quiet": b < QUIET["threshold"]}


def measure(cmd, env=None, check=True, quiet=False, wait=True) -> dict:
    """Run ``cmd`` (a list) as one child of a tiny launcher. Returns wall_s (spawn to exit,
    interpreter start included), peak_rss_mb (the child's own peak RSS via wait4), cpu_s
    (user+sys of the child), other_cpu_cores (mean cores busy with OTHER processes during
    the run, from /proc/stat), load averages before/after, returncode."""
    q = wait_quiet() if wait else None
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "m.json"
        kw = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
        r = subprocess.run([sys.executable, "-c", _LAUNCHER, str(out)] + [str(c) for c in cmd],
                           env=env, **kw)
        if r.returncode != 0 or not out.exists():
            raise RuntimeError(f"launcher failed ({r.returncode}) for {cmd}")
        m = json.loads(out.read_text())
    if q is not None:
        m["quiet_wait"] = q
    if check and m["returncode"] != 0:
        raise RuntimeError(f"command failed with exit code {m['returncode']}: {shlex.join(map(str, cmd))}")
    return m


def child(script: str, task: str, *args, env=None) -> tuple[dict, dict]:
    """Run ``python SCRIPT --child TASK --child-out F ARGS`` measured; returns (measure, the JSON it wrote)."""
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "child.json"
        m = measure([sys.executable, script, "--child", task, "--child-out", out, *args], env=env)
        return m, json.loads(out.read_text())


def add_child_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)


def child_result(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, default=_default))


def self_peak_mb() -> float:
    """This process's own peak RSS (VmHWM of its current address space), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- output
def target(value, limit, op="<=") -> dict:
    ok = value <= limit if op == "<=" else value >= limit
    return {"value": value, "limit": limit, "op": op, "pass": bool(ok)}


def fmt_target(name, t, unit="") -> list:
    return [name, f"{t['value']:.3g}{unit}", f"{t['op']} {t['limit']}{unit}", "PASS" if t["pass"] else "FAIL"]


def table(rows, headers) -> str:
    rows = [[str(c) for c in r] for r in rows]
    w = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line([str(h) for h in headers]), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
                     + [line(r) for r in rows])


def _default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, loadavg_end=loadavg())
    path = RESULTS / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_default) + "\n")
    os.replace(tmp, path)
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
