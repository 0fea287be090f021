"""Head training from a feature cache, and scikit-learn's MLPClassifier on the same data.

    python benchmarks/bench_train.py [--cache FILE | --data DIR --backbone FILE] [--seeds 5]

Without --cache, a cache with views (roi, masked, mask) is first extracted into a temp dir.
Each task runs in its own child process (peak RSS per task):
  one-plain    experiments.run_one, plain head, lr 1e-4, batch 32, 50 epochs, masks off (~650
               samples) and on (~2250 samples), seeds 0..N-1; seconds = run_one's train_seconds
               (split + training set + training with a per-epoch test-loss pass), plus fit() alone
  grid         experiments.sweep(cache, paper_grid('plain'), range(N)): 12 configs x N seeds
  mtl          run_one of model-7+mtl (multi-task head on the 7x7 grid features), seed 0; right before
               and right after it, in the same child with the same BLAS threads, its GEMM floor
               (gemm_floor: the head's own matrix products of 50 epochs alone), and the ratio of the two
  sklearn      MLPClassifier(hidden 100, adam, lr 1e-4, batch 32, 50 epochs, alpha 0, no early
               stopping) on the same pooled training features of the same splits
               (split_for, training_rows, build_xy), evaluated with busi_lite.evaluation.metrics.summarize

Targets: one config <= 2 s on 2 cores; whole plain grid x 5 seeds <= 3 min; mtl <= 4 s.

--baseline TREE (a source tree of another commit, ``git archive COMMIT | tar -x -C TREE``): every
task's child also runs on that tree (PYTHONPATH=TREE) right after, and the table gives both and
the ratio of training seconds (before/after in one run); --out NAME writes results/NAME.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from busi_lite.features.cache import FeatureCache
from busi_lite.training.core import build_xy, make_head, split_for, training_rows

TARGET_ONE_S, TARGET_GRID_S, TARGET_MTL_S = 2.0, 180.0, 4.0
LR, BATCH, EPOCHS = 1e-4, 32, 50


def _cfg(masks: bool, head="plain"):
    from busi_lite.model.config import Config

    return getattr(Config, "build", Config)(name=f"model-7{'p' if masks else ''}{'+mtl' if head == 'mtl' else ''}", lr=LR, batch=BATCH,
                  epochs=EPOCHS, masks=masks, head=head)


def _metrics(test: dict) -> dict:
    return {"accuracy": test["accuracy"], "malignant_recall": test["malignant"]["recall"],
            "malignant_far": test["malignant"]["far"], "malignant_auc": test["malignant_auc"],
            "macro_f1": test["macro_f1"]}


def _plain(r) -> dict:
    """A run's result as plain JSON (run_one returns a RunResult record)."""
    return r.to_json() if hasattr(r, "to_json") else r


def _preload(cache, pooled=True):
    """Read the cache's arrays once (FeatureCache keeps them), timed separately from training."""
    t0 = time.perf_counter()
    for v in cache.views:
        cache.valid(v)
        cache.pooled(v) if pooled else cache.spatial(v)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- child tasks
def child_one(cache_path, seeds, masks: bool) -> dict:
    from busi_lite.heads import fit
    from busi_lite.training import experiments as E

    cache = FeatureCache(cache_path)
    load_s = _preload(cache)
    cfg = _cfg(masks)
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        r = _plain(E.run_one(cache, cfg, seed))
        total = time.perf_counter() - t0
        # fit() alone on the same samples, no per-epoch validation pass (like sklearn's fit)
        sp = split_for(cache, seed)
        tr = build_xy(cache, training_rows(cache, sp.train, cfg, seed), cfg, with_views=cfg.masks)
        head = make_head(cfg, len(cache.classes), seed)
        t1 = time.perf_counter()
        kw = cfg.params.fit_kwargs() if hasattr(cfg, "params") else dict(lr=cfg.lr, batch_size=cfg.batch,
                                                                          epochs=cfg.epochs)
        fit(head, tr["X"], tr["y"], **kw, seed=seed)
        fit_s = time.perf_counter() - t1
        runs.append({"seed": seed, "train_seconds": r["train_seconds"], "run_one_seconds": total, "fit_seconds": fit_s,
                     "n_train_samples": r["n_train_samples"], "n_train_images": r["n_train_images"],
                     "n_test": r["n_test"], "split": r["split"], **_metrics(r["test"])})
    return {"config": cfg.name, "load_seconds": load_s, "runs": runs}


def child_grid(cache_path, seeds) -> dict:
    from busi_lite.model.config import paper_grid
    from busi_lite.training import experiments as E

    cache = FeatureCache(cache_path)
    t0 = time.perf_counter()
    res = E.sweep(cache, paper_grid("plain"), list(seeds))
    seconds = time.perf_counter() - t0
    per = [{"name": s["name"], **{k: s[k]["mean"] for k in ("accuracy", "malignant_recall", "malignant_far",
                                                             "malignant_auc", "train_seconds")}}
           for s in res["summary"]]
    return {"seconds": seconds, "runs": len(res["results"]),
            "sum_train_seconds": sum(r["train_seconds"] for r in res["results"]), "per_config": per}


def gemm_floor(n, n_val, cells, d, hidden, batch, epochs, dtype="float32", chunk=256) -> dict:
    """Seconds (wall and this process's CPU) of the multi-task head's matrix products alone, in this
    process with its BLAS threads: per epoch, for each mini-batch of b samples (as fit() cuts n),
    the hidden layer [b*cells,d]@[d,hidden] and its weight gradient [d,b*cells]@[b*cells,hidden]
    (the transposed view, as the head multiplies it); plus the per-epoch validation forward pass
    over n_val samples in chunks of ``chunk`` ([c*cells,d]@[d,hidden]). Random data of those shapes
    and dtype (the time of a product does not depend on the values)."""
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((max(batch, chunk) * cells, d), dtype=np.float32).astype(dtype)
    W = (rng.standard_normal((d, hidden), dtype=np.float32) * 0.03).astype(dtype)
    G = rng.standard_normal((batch * cells, hidden), dtype=np.float32).astype(dtype)
    sizes = [min(batch, n - i) * cells for i in range(0, n, batch)]
    val = [min(chunk, n_val - i) * cells for i in range(0, n_val, chunk)]
    out = {}
    for name, work in (("train", lambda: [(X[:m] @ W, X[:m].T @ G[:m]) for m in sizes]),
                       ("val", lambda: [X[:m] @ W for m in val])):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(epochs):
            work()
        out[f"{name}_seconds"], out[f"{name}_cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    flop = 2 * 2 * sum(sizes) * d * hidden * epochs
    out.update(n=n, n_val=n_val, cells=cells, d=d, hidden=hidden, batch=batch, epochs=epochs, dtype=str(dtype),
               train_tflop=flop / 1e12, gflops=flop / out["train_seconds"] / 1e9)
    return out


def child_mtl(cache_path, seed) -> dict:
    from busi_lite.common.threads import blas_pools
    from busi_lite.training import experiments as E

    cache = FeatureCache(cache_path)
    t0 = time.perf_counter()
    for v in cache.views:
        cache.valid(v)
    cache.spatial("raw")
    cache.grid("raw")
    load_s = time.perf_counter() - t0
    cfg = _cfg(False, "mtl")
    n_train = len(training_rows(cache, split_for(cache, seed).train, cfg, seed))
    n_val = len(split_for(cache, seed).test)
    _, cells, d = cache.spatial("raw", [0]).shape
    shape = (n_train, n_val, cells, d, cfg.params.hidden, BATCH, EPOCHS)
    before = gemm_floor(*shape)  # the floor right before and right after the run: the machine is shared
    t0, c0 = time.perf_counter(), time.process_time()
    r = _plain(E.run_one(cache, cfg, seed))
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = gemm_floor(*shape)
    floor = {**after, **{k: (before[k] + after[k]) / 2 for k in before if k.endswith("seconds")},
             "gflops": (before["gflops"] + after["gflops"]) / 2, "before": before, "after": after}
    return {"config": cfg.name, "seed": seed, "load_seconds": load_s, "train_seconds": r["train_seconds"],
            "run_one_seconds": total, "run_one_cpu_seconds": cpu, "n_train_samples": r["n_train_samples"],
            **_metrics(r["test"]), "dice": r["test"].get("segmentation", {}).get("dice"), "gemm_floor": floor,
            "blas": [p.to_dict() for p in blas_pools()]}


def child_sklearn(cache_path, seeds) -> dict:
    import numpy as np
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from busi_lite.evaluation import metrics as M
    from busi_lite.training import experiments as E

    cache = FeatureCache(cache_path)
    _preload(cache)
    out = {"sklearn": sklearn.__version__, "configs": {}}
    for masks in (False, True):
        cfg = _cfg(masks)
        runs = []
        for seed in seeds:
            sp = split_for(cache, seed)
            rows = training_rows(cache, sp.train, cfg, seed)
            tr = build_xy(cache, rows, cfg, with_views=cfg.masks)
            te = build_xy(cache, sp.test, cfg, with_views=False)
            clf = MLPClassifier(hidden_layer_sizes=(100,), solver="adam", learning_rate_init=LR, batch_size=BATCH,
                                max_iter=EPOCHS, shuffle=True, random_state=seed, alpha=0.0, early_stopping=False,
                                n_iter_no_change=10 ** 9, tol=0.0)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(tr["X"], tr["y"])
            fit_s = time.perf_counter() - t0
            proba = np.zeros((len(te["y"]), len(cache.classes)))
            proba[:, clf.classes_] = clf.predict_proba(te["X"])
            test = M.summarize(te["y"], proba, cache.classes)
            runs.append({"seed": seed, "fit_seconds": fit_s, "n_iter": int(clf.n_iter_),
                         "n_train_samples": int(len(tr["y"])), "split": sp.digest(cache.paths), **_metrics(test)})
        out["configs"][cfg.name] = runs
    return out


# ---------------------------------------------------------------- parent
def _extract_cache(data, backbone, out: Path):
    C.log(f"extracting a cache with views into {out} (setup, not measured) ...")
    subprocess.run([sys.executable, "-m", "busi_lite.cli", "extract", "--data", str(data), "--backbone",
                    str(backbone), "--out", str(out), "--views", "roi,masked,mask"], check=True,
                   stdout=subprocess.DEVNULL)


def _agg(runs, key):
    from busi_lite.evaluation.metrics import mean_ci

    vals = [r[key] for r in runs]
    mean, lo, hi = mean_ci(vals)
    return {"mean": mean, "lo": lo, "hi": hi, "median": statistics.median(vals), "values": vals}


def _m(summary, key, digits=3):
    s = summary[key]
    return f"{s['mean']:.{digits}f} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--cache", help="existing feature cache WITH views (default: extract one into a temp dir)")
    p.add_argument("--seeds", type=int, default=5, help="number of split seeds (0..N-1)")
    p.add_argument("--tasks", default="one-plain,one-1thread,grid,mtl,sklearn")
    p.add_argument("--one-thread", default="grid,sklearn",
                   help="tasks whose child runs with NumPy's BLAS on one thread (OPENBLAS_NUM_THREADS=1); on a "
                        "shared 2-core machine multi-threaded OpenBLAS spin-waits and small matmuls get many "
                        "times slower. '' = library defaults everywhere")
    p.add_argument("--report", action="store_true", help="only re-print the tables of results/train.json")
    p.add_argument("--baseline", help="source tree of another commit: every task also runs on it (see above)")
    p.add_argument("--out", default="train", help="results/NAME.json to write (default train)")
    p.add_argument("--masks", type=int, default=0, help=argparse.SUPPRESS)  # child only
    C.add_quiet_args(p)
    C.add_child_args(p)
    args = p.parse_args(argv)
    C.configure(args)
    seeds = list(range(args.seeds))
    if args.report:  # re-print the tables (and recompute the targets) of the saved results, no measuring
        import json

        path = C.RESULTS / "train.json"
        res = json.loads(path.read_text())
        report(res)
        path.write_text(json.dumps(res, indent=1, default=C._default) + "\n")
        return
    if args.child:
        fn = {"one": lambda: child_one(args.cache, seeds, bool(args.masks)),
              "grid": lambda: child_grid(args.cache, seeds),
              "mtl": lambda: child_mtl(args.cache, 0),
              "sklearn": lambda: child_sklearn(args.cache, seeds)}[args.child]
        C.child_result(args.child_out, fn())
        return

    res = C.header(extra_versions=(("sklearn", "sklearn"),))
    with tempfile.TemporaryDirectory(prefix="bench_train_") as td:
        if args.cache:
            cache = Path(args.cache).resolve()
        else:
            data, backbone = C.data_path(args), C.backbone_path(args)
            res.update(data=str(data), backbone=str(backbone))
            cache = Path(td) / "cache.h5"
            _extract_cache(data, backbone, cache)
        if args.baseline:
            res["baseline"] = str(Path(args.baseline).resolve())
        res.update(cache=str(cache) if args.cache else "(extracted into a temp dir)", seeds=seeds,
                   config={"lr": LR, "batch": BATCH, "epochs": EPOCHS, "hidden": 100})
        tasks = args.tasks.split(",")
        ONE_THREAD = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env_for = lambda task: ONE_THREAD if task in args.one_thread.split(",") else None  # noqa: E731
        res["blas_one_thread_tasks"] = [t for t in args.one_thread.split(",") if t]
        common = ["--cache", cache, "--seeds", str(args.seeds)]

        def run1(task, *extra, env=None):
            on_base = bool(env) and env.get("PYTHONPATH") == res.get("baseline")
            C.log(f"task {task} {' '.join(map(str, extra))}{' (BLAS 1 thread)' if env and not on_base else ''}"
                  f"{' on the baseline' if on_base else ''} ...")
            m, out = C.child(__file__, task, *common, *extra, env=env)
            C.log(f"  wall {m['wall_s']:.1f}s, peak {m['peak_rss_mb']:.0f} MB, other processes "
                  f"{m['other_cpu_cores']:.2f} cores, load {m['loadavg_before']}")
            return {"process": m, **out}

        def run(task, *extra, env=None):
            out = run1(task, *extra, env=env)
            if args.baseline:
                out["baseline"] = run1(task, *extra, env=dict(env or os.environ, PYTHONPATH=res["baseline"]))
            return out

        if "one-plain" in tasks:
            res["one"] = {}
            for masks in (0, 1):
                out = run("one", "--masks", str(masks))
                out["summary"] = {k: _agg(out["runs"], k) for k in
                                  ("train_seconds", "fit_seconds", "accuracy", "malignant_recall", "malignant_far",
                                   "malignant_auc")}
                res["one"][out["config"]] = out
        if "one-1thread" in tasks:  # the same, with NumPy's BLAS on one thread (shared 2-core machine)
            res["one_blas1"] = {}
            for masks in (0, 1):
                out = run("one", "--masks", str(masks), env=ONE_THREAD)
                out["summary"] = {k: _agg(out["runs"], k) for k in
                                  ("train_seconds", "fit_seconds", "accuracy", "malignant_recall", "malignant_far",
                                   "malignant_auc")}
                res["one_blas1"][out["config"]] = out
        if "grid" in tasks:
            res["grid"] = run("grid", env=env_for("grid"))
            res["grid"]["blas_threads"] = "1" if env_for("grid") else "default"
        if "mtl" in tasks:
            res["mtl"] = run("mtl")
        if "sklearn" in tasks:
            sk = run("sklearn", env=env_for("sklearn"))
            sk["blas_threads"] = "1" if env_for("sklearn") else "default"
            sk["summary"] = {name: {k: _agg(runs, k) for k in ("fit_seconds", "accuracy", "malignant_recall",
                                                               "malignant_far", "malignant_auc")}
                             for name, runs in sk["configs"].items()}
            res["sklearn"] = sk

    report(res)
    path = C.write_results(args.out, res)
    print(f"\nwrote {path.relative_to(C.REPO)}")


def mtl_floor_text(m: dict) -> str:
    """The multi-task head's time against its matrix-product floor measured in the same child."""
    f = m["gemm_floor"]
    both = f["train_seconds"] + f["val_seconds"]
    return (f"{m['config']}: train {m['train_seconds']:.2f} s vs GEMM floor {f['train_seconds']:.2f} s "
            f"(the training products alone: {f['epochs']} epochs x {-(-f['n'] // f['batch'])} batches, "
            f"[{f['batch']}*{f['cells']},{f['d']}]@[{f['d']},{f['hidden']}] and its weight gradient, {f['dtype']}, "
            f"{f['train_tflop']:.2f} TFLOP at {f['gflops']:.0f} GFLOP/s; mean of the floor measured right before "
            f"({f['before']['train_seconds']:.2f} s) and right after ({f['after']['train_seconds']:.2f} s) the run) "
            f"= {m['train_seconds'] / f['train_seconds']:.2f}x; "
            f"with the per-epoch validation pass's product ({f['val_seconds']:.2f} s) the floor is {both:.2f} s = "
            f"{m['train_seconds'] / both:.2f}x. Target {TARGET_MTL_S:g} s"
            + (": below the floor on this machine (blocked by its GEMM rate)" if f["train_seconds"] > TARGET_MTL_S
               else "") + f". load average before {m['process']['loadavg_before']}")


def report(res: dict) -> None:
    seeds = res["seeds"]
    targets, rows = {}, []
    print(f"\nHead training, {res['machine']['cores']} cores, {res['machine']['cpu_model']}, "
          f"load avg at start {res['loadavg_start']}; lr {LR}, batch {BATCH}, {EPOCHS} epochs, seeds {seeds}")
    if "one" in res:
        for name, o in res["one"].items():
            s, pm = o["summary"], o["process"]
            rows.append([f"{name} plain (run_one)", o["runs"][0]["n_train_samples"],
                         f"{s['train_seconds']['median']:.2f}", f"{s['fit_seconds']['median']:.2f}",
                         f"{pm['peak_rss_mb']:.0f}", f"{pm['other_cpu_cores']:.2f}"])
        for name, o in res.get("one_blas1", {}).items():
            s, pm = o["summary"], o["process"]
            rows.append([f"{name} plain (run_one), BLAS 1 thread", o["runs"][0]["n_train_samples"],
                         f"{s['train_seconds']['median']:.2f}", f"{s['fit_seconds']['median']:.2f}",
                         f"{pm['peak_rss_mb']:.0f}", f"{pm['other_cpu_cores']:.2f}"])
    for key, label in (("one", "BLAS default threads"), ("one_blas1", "BLAS 1 thread")):
        for name, o in res.get(key, {}).items():
            targets[f"one_config_s:{name}:{label}"] = C.target(round(o["summary"]["train_seconds"]["median"], 3),
                                                              TARGET_ONE_S)
    if "mtl" in res:
        m = res["mtl"]
        rows.append([f"{m['config']} (run_one, seed 0)", m["n_train_samples"], f"{m['train_seconds']:.2f}", "",
                     f"{m['process']['peak_rss_mb']:.0f}", f"{m['process']['other_cpu_cores']:.2f}"])
        targets["mtl_s"] = C.target(round(m["train_seconds"], 3), TARGET_MTL_S)
    if "grid" in res:
        g = res["grid"]
        rows.append([f"plain paper grid: 12 configs x {len(seeds)} seeds ({g['runs']} runs), BLAS {g['blas_threads']} thread(s)", "", f"{g['seconds']:.1f}",
                     "", f"{g['process']['peak_rss_mb']:.0f}", f"{g['process']['other_cpu_cores']:.2f}"])
        targets["grid_x5_s"] = C.target(round(g["seconds"], 2), TARGET_GRID_S)
    if rows:
        print(C.table(rows, ["what", "train samples", "seconds (median)", "fit() only s", "peak RSS MB",
                             "other procs cores"]))
    if "sklearn" in res and "one" in res:
        side = []
        busi = res["one_blas1"] if res["sklearn"]["blas_threads"] == "1" and "one_blas1" in res else res["one"]
        thr = "BLAS 1 thread" if busi is res.get("one_blas1") else "BLAS default threads"
        for name in busi:
            a, b = busi[name]["summary"], res["sklearn"]["summary"][name]
            side.append([name, f"busi_lite fit() ({thr})", f"{a['fit_seconds']['median']:.2f}", _m(a, "accuracy"),
                         _m(a, "malignant_recall"), _m(a, "malignant_far"), _m(a, "malignant_auc")])
            side.append([name, f"sklearn MLPClassifier {res['sklearn']['sklearn']} ({'BLAS 1 thread' if res['sklearn']['blas_threads'] == '1' else 'BLAS default threads'})", f"{b['fit_seconds']['median']:.2f}",
                         _m(b, "accuracy"), _m(b, "malignant_recall"), _m(b, "malignant_far"),
                         _m(b, "malignant_auc")])
        print(f"\nSide by side on the same {len(seeds)} splits (test = raw view of the 15 % test images; "
              "mean [95 % CI] over seeds)")
        print(C.table(side, ["config", "implementation", "fit s (median)", "accuracy", "malignant recall",
                             "malignant FAR", "malignant AUC"]))
    res["targets"] = targets
    if targets:
        key_of = {"BLAS default threads": "one", "BLAS 1 thread": "one_blas1"}
        tr = []
        for k, t in targets.items():
            if k.startswith("one_config_s:"):
                _, name, label = k.split(":")
                n = res[key_of[label]][name]["runs"][0]["n_train_samples"]
                tr.append(C.fmt_target(f"one config {name} ({n} samples, median of {len(seeds)}), {label}", t, " s"))
        if "mtl_s" in targets:
            tr.append(C.fmt_target(f"multi-task head {res['mtl']['config']} (seed 0)", targets["mtl_s"], " s"))
        if "grid_x5_s" in targets:
            tr.append(C.fmt_target(f"plain grid x {len(seeds)} seeds, BLAS {res['grid']['blas_threads']} thread(s)",
                                   targets["grid_x5_s"], " s"))
        print()
        print(C.table(tr, ["target", "measured", "limit", "result"]))
    if "mtl" in res and "gemm_floor" in res["mtl"]:
        print("\n" + mtl_floor_text(res["mtl"]))
    res["machine_note"] = "other_cpu_cores ~1 means another process held one of the two cores during the run"
    pairs = []
    for key in ("one", "one_blas1"):
        for name, o in res.get(key, {}).items():
            if "baseline" in o:
                a = statistics.median(r["train_seconds"] for r in o["runs"])
                b = statistics.median(r["train_seconds"] for r in o["baseline"]["runs"])
                pairs.append([f"{name} ({key})", f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}x", o["process"]["loadavg_before"]])
    if "mtl" in res and "baseline" in res["mtl"]:
        a, b = res["mtl"]["train_seconds"], res["mtl"]["baseline"]["train_seconds"]
        pairs.append([res["mtl"]["config"], f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}x", res["mtl"]["process"]["loadavg_before"]])
    if pairs:
        print("\nAgainst the baseline tree " + res.get("baseline", ""))
        print(C.table(pairs, ["config", "train s (this tree)", "train s (baseline)", "ratio", "load avg"]))


if __name__ == "__main__":
    main()
