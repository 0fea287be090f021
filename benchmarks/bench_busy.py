"""Training and a warm predict on a quiet machine and beside a core-burning process,
with NumPy's default BLAS threads and with one BLAS thread (busi_lite.common.threads).

    python benchmarks/bench_busy.py [--cache FILE] [--train one|fit] [--predict-n 30]
                                    [--train-repeats 1] [--predict-repeats 3]
                                    [--blas default,1] [--ort-threads N] [--quiet-wait S]

Cells: {quiet, busy} x {BLAS default, BLAS 1} x {train, predict}, each in its own child
process (BLAS chosen inside it with threadpoolctl; OPENBLAS_NUM_THREADS & co. are removed
from the child's environment so "default" is the library's own choice):
  train    the training of `busi-lite train --lr 1e-4 --batch 32` (plain head, 50 epochs, no
           masks, seed 0) as a library call on an existing feature cache, arrays preloaded
           (not timed): `--train one` (default) experiments.run_one, ONE training on the
           85 % split; `--train fit` experiments.fit_model, everything `busi-lite train` does
           (that training + 5 out-of-fold trainings for calibration + test), about 6x longer:
           with the default BLAS threads on a loaded 2-core machine that took 205-330 s a cell;
  predict  inference.Predictor() with the packaged model and backbone, 5 warm-up calls,
           then predict([examples/malignant_206.png]) --predict-n times: median and p90 ms.
Cells are repeated (--train-repeats, --predict-repeats) with quiet and busy interleaved,
and each cell reports the median over its repeats (all values are kept in the JSON).
"busy": one `python -c "while True: pass"` process runs beside the child for the whole
cell (started after the quiet wait, stopped after the child). Every cell records the load
average and `other_cpu_cores` (cores used by all other processes, the burner included).

Targets: with one BLAS thread, busy <= 2x quiet for train and for predict; and one BLAS
thread no slower than the default on the quiet machine (ratio <= 1.1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from busi_lite.features.cache import FeatureCache
from busi_lite.model.config import Config

DEFAULT_CACHE = C.REPO / "cache" / "busi_features.h5"  # what busi-lite extract writes in a checkout
EXAMPLE = C.REPO / "examples" / "malignant_206.png"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
TARGET_BUSY_RATIO, TARGET_QUIET_RATIO = 2.0, 1.1
WARMUP = 5


# ---------------------------------------------------------------- child tasks
def _limit(blas: str):
    from busi_lite.common.threads import blas_pools, limit_blas

    limiter = None if blas == "default" else limit_blas(int(blas))
    return limiter, [p.to_dict() for p in blas_pools()]


def child_train(cache_path, blas: str, kind: str) -> dict:
    from busi_lite.training import experiments as E

    _, pools = _limit(blas)
    cache = FeatureCache(cache_path)
    t0 = time.perf_counter()
    for v in cache.views:
        cache.valid(v)
        cache.pooled(v)
    load_s = time.perf_counter() - t0
    config = Config.build(name="busy-bench", lr=1e-4, batch=32)
    t0 = time.perf_counter()
    if kind == "fit":
        E.fit_model(cache, config, 0)
    else:
        E.run_one(cache, config, 0)
    return {"seconds": time.perf_counter() - t0, "load_seconds": load_s, "blas_pools": pools,
            "config": {**config.params.to_json(), "masks": config.masks}}


def child_predict(image, blas: str, n: int, ort_threads: int) -> dict:
    from busi_lite.features.backbone import Backbone
    from busi_lite.serving.inference import Predictor

    _, pools = _limit(blas)
    t0 = time.perf_counter()
    pred = Predictor(backbone=Backbone(threads=ort_threads or None))
    load_s = time.perf_counter() - t0
    for _ in range(WARMUP):
        out = pred.predict([image])
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        pred.predict([image])
        ms.append(1000 * (time.perf_counter() - t0))
    ms.sort()
    return {"median_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))], "ms": ms,
            "load_seconds": load_s, "blas_pools": pools, "label": out[0].label,
            "ort_threads": pred.backbone.session.get_session_options().intra_op_num_threads}


# ---------------------------------------------------------------- parent
def _child_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES and not k.startswith("BUSI_LITE_")}


def _run(args, task: str, blas: str, busy: bool) -> dict:
    q = C.wait_quiet()
    burner = None
    if busy:
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        extra = ["--blas", blas, "--train", args.train, "--predict-n", str(args.predict_n),
                 "--ort-threads", str(args.ort_threads), "--cache", str(args.cache)]
        with tempfile.TemporaryDirectory() as td:  # like C.child, but the quiet wait was done above
            out_path = Path(td) / "child.json"
            m = C.measure([sys.executable, __file__, "--child", task, "--child-out", out_path, *extra],
                          env=_child_env(), wait=False)
            out = json.loads(out_path.read_text())
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    m["quiet_wait"] = q
    value = out["seconds"] if task == "train" else out["median_ms"] / 1000
    C.log(f"  {task:7s} BLAS {blas:7s} {'busy ' if busy else 'quiet'}: "
          f"{value if task == 'train' else 1000 * value:.3g} {'s' if task == 'train' else 'ms'}  "
          f"(other processes used {m['other_cpu_cores']:.2f} cores, load {m['loadavg_after'][0]})")
    return {"seconds": value, "measure": m, "child": out}


def _cell(args, task: str, blas: str, busy: bool, runs: list) -> dict:
    vals = [r["seconds"] for r in runs]
    return {"task": task, "blas": blas, "machine": "busy" if busy else "quiet", "seconds": statistics.median(vals),
            "values": vals, "other_cpu_cores": statistics.median(r["measure"]["other_cpu_cores"] for r in runs),
            "loadavg_after": runs[-1]["measure"]["loadavg_after"], "runs": runs}


def report(res: dict) -> None:
    cells = {(c["task"], c["blas"], c["machine"]): c for c in res["cells"]}
    rows = []
    for (task, blas, machine), c in cells.items():
        unit = (f"{c['seconds']:.2f} s" if task == "train" else f"{1000 * c['seconds']:.1f} ms")
        rows.append([task, blas, machine, unit, len(c["values"]), f"{c['other_cpu_cores']:.2f}",
                     " ".join(str(x) for x in c["loadavg_after"])])
    print(C.table(rows, ["task", "BLAS threads", "machine", "time (median)", "repeats", "other cores busy",
                         "load avg after"]))
    res["targets"] = {}
    trows = []
    for task in ("train", "predict"):
        for blas in res["blas"]:
            q, b = cells.get((task, blas, "quiet")), cells.get((task, blas, "busy"))
            if q and b:
                t = C.target(round(b["seconds"] / q["seconds"], 3), TARGET_BUSY_RATIO)
                res["targets"][f"{task}_busy_over_quiet_blas_{blas}"] = t
                trows.append(C.fmt_target(f"{task}: busy / quiet, BLAS {blas}", t, "x"))
        q1, qd = cells.get((task, "1", "quiet")), cells.get((task, "default", "quiet"))
        if q1 and qd:
            t = C.target(round(q1["seconds"] / qd["seconds"], 3), TARGET_QUIET_RATIO)
            res["targets"][f"{task}_quiet_blas1_over_default"] = t
            trows.append(C.fmt_target(f"{task}: quiet, BLAS 1 / default", t, "x"))
    print()
    print(C.table(trows, ["target", "value", "limit", "result"]))
    print("\nThe 'quiet' cells ran while the machine was shared: see 'other cores busy' "
          "(the busy cells include the burner's ~1 core).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("BUSI_LITE_CACHE") or DEFAULT_CACHE),
                   help=f"feature cache to train on, read only (default $BUSI_LITE_CACHE, then {DEFAULT_CACHE})")
    p.add_argument("--train", choices=("one", "fit"), default="one",
                   help="one: run_one, a single training (default); fit: fit_model, all that `busi-lite train` "
                        "runs (6 trainings; slow with the default BLAS threads on a busy machine)")
    p.add_argument("--train-repeats", type=int, default=1, help="runs per train cell (median)")
    p.add_argument("--predict-repeats", type=int, default=3, help="runs per predict cell (median)")
    p.add_argument("--predict-n", type=int, default=30, help="timed predict calls per cell (after 5 warm-up)")
    p.add_argument("--blas", default="default,1", help="BLAS thread settings to compare ('default' or a number)")
    p.add_argument("--ort-threads", type=int, default=0,
                   help="onnxruntime intra-op threads for predict (0: busi-lite's default)")
    p.add_argument("--tasks", default="train,predict")
    C.add_quiet_args(p)
    C.add_child_args(p)
    args = p.parse_args(argv)
    C.configure(args)
    if args.child:
        out = (child_train(args.cache, args.blas, args.train) if args.child == "train"
               else child_predict(EXAMPLE, args.blas, args.predict_n, args.ort_threads))
        C.child_result(args.child_out, out)
        return
    if "train" in args.tasks and not args.cache.is_file():
        sys.exit(f"error: feature cache {args.cache} not found -> pass --cache FILE (made by `busi-lite extract`)")
    blas = [b.strip() for b in args.blas.split(",") if b.strip()]
    res = C.header(extra_versions=(("threadpoolctl", "threadpoolctl"),))
    res.update({"cache": str(args.cache), "train": args.train, "predict_n": args.predict_n, "blas": blas,
                "train_repeats": args.train_repeats, "predict_repeats": args.predict_repeats,
                "ort_threads": args.ort_threads or "default", "image": str(EXAMPLE.relative_to(C.REPO)),
                "cells": []})
    t0 = time.perf_counter()
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        repeats = args.train_repeats if task == "train" else args.predict_repeats
        for b in blas:
            runs = {False: [], True: []}
            for _ in range(repeats):
                for busy in (False, True):
                    runs[busy].append(_run(args, task, b, busy))
            res["cells"] += [_cell(args, task, b, busy, runs[busy]) for busy in (False, True)]
    res["total_seconds"] = time.perf_counter() - t0
    report(res)
    path = C.write_results("busy", res)
    C.log(f"wrote {path} in {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
