"""Feature extraction of all of BUSI: with all 14 views, with the mask views (roi, masked, mask), without.

Each extraction runs in its own child process (fresh interpreter, cold cache file in a
temp dir), so its wall time includes interpreter start, imports and the ONNX session, and
its peak RSS covers just that work.

    python benchmarks/bench_extract.py [--data DIR] [--backbone FILE] [--repeat N] [--modes all-views,views]
                                       [--baseline TREE]

--baseline TREE: a source tree of another commit (``git archive COMMIT | tar -x -C TREE``); every
run is then paired with the same run on that tree (PYTHONPATH=TREE, alternating which goes first),
and each mode reports both and the ratios (wall time, peak RSS): "no slower" checked in one run.

Targets: all of BUSI with views <= 60 s on 2 cores (child wall time), peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from busi_lite.features.views import ALL_VIEWS

TARGET_S, TARGET_MB = 60.0, 1024.0
MODES = {"all-views": ",".join(ALL_VIEWS), "views": "roi,masked,mask", "no-views": ""}


def child_extract(args) -> dict:
    """In the child: one cold extraction into a fresh temp dir."""
    import h5py

    from busi_lite.features.cache import extract

    views = tuple(v for v in args.views.split(",") if v)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as td:
        out = Path(td) / "cache.h5"
        t0 = time.perf_counter()
        s = extract(args.data, out, args.backbone, views=views, force=True, progress=False, log=lambda m: None)
        seconds = time.perf_counter() - t0
        with h5py.File(out, "r") as f:
            inputs = {v: int(f[f"valid/{v}"][:].sum()) for v in f["valid"]}
        size_mb = out.stat().st_size / 1e6
    return {"images": s["images"], "extracted": s["extracted"], "counts": s["counts"], "problems": len(s["problems"]),
            "seconds": seconds, "seconds_reported": s["seconds"], "inputs_per_view": inputs,
            "backbone_inputs": sum(inputs.values()), "cache_mb": size_mb, "self_peak_mb": C.self_peak_mb()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--repeat", type=int, default=1, help="cold runs per mode (median reported)")
    p.add_argument("--modes", default="all-views,views,no-views", help="comma list of: all-views, views, no-views")
    p.add_argument("--baseline", help="source tree of another commit to pair every run with (see above)")
    p.add_argument("--out", default="extract", help="results/NAME.json to write (default extract)")
    p.add_argument("--views", default="roi,masked,mask", help=argparse.SUPPRESS)  # child only
    C.add_quiet_args(p)
    C.add_child_args(p)
    args = p.parse_args(argv)
    C.configure(args)
    if args.child:
        C.child_result(args.child_out, child_extract(args))
        return
    data, backbone = C.data_path(args), C.backbone_path(args)
    res = C.header()
    res.update(data=str(data), backbone=str(backbone), repeat=args.repeat, modes={})
    rows = []
    import os

    base_env = None
    if args.baseline:
        base_env = dict(os.environ, PYTHONPATH=str(Path(args.baseline).resolve()))
        res["baseline"] = str(Path(args.baseline).resolve())

    def one(mode, env):
        m, out = C.child(__file__, "extract", "--data", data, "--backbone", backbone, "--views", MODES[mode], env=env)
        run = {**out, "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"], "cpu_s": m["cpu_s"],
               "other_cpu_cores": m["other_cpu_cores"], "loadavg_before": m["loadavg_before"],
               "loadavg_after": m["loadavg_after"], "quiet_wait": m.get("quiet_wait")}
        C.log(f"  {'baseline ' if env else ''}{out['seconds']:.1f}s in extract(), wall {m['wall_s']:.1f}s, peak "
              f"{m['peak_rss_mb']:.0f} MB, other processes {m['other_cpu_cores']:.2f} cores, load {m['loadavg_before']}")
        return run

    for mode in args.modes.split(","):
        runs, base_runs = [], []
        for r in range(args.repeat):
            C.log(f"extract {mode} run {r + 1}/{args.repeat} ...")
            if base_env is not None and r % 2 == 0:
                base_runs.append(one(mode, base_env))
            runs.append(one(mode, None))
            if base_env is not None and r % 2 == 1:
                base_runs.append(one(mode, base_env))
        med = lambda k, rs=runs: statistics.median(x[k] for x in rs)  # noqa: E731
        first = runs[0]
        summary = {"images": first["images"], "backbone_inputs": first["backbone_inputs"],
                   "inputs_per_view": first["inputs_per_view"], "seconds": med("seconds"), "wall_s": med("wall_s"),
                   "peak_rss_mb": max(x["peak_rss_mb"] for x in runs), "cpu_s": med("cpu_s"),
                   "other_cpu_cores": med("other_cpu_cores"), "cache_mb": first["cache_mb"],
                   "loadavg": first["loadavg_before"]}
        summary["images_per_s"] = summary["images"] / summary["seconds"]
        summary["inputs_per_s"] = summary["backbone_inputs"] / summary["seconds"]
        if base_runs:
            summary["baseline"] = {"wall_s": med("wall_s", base_runs), "seconds": med("seconds", base_runs),
                                   "peak_rss_mb": max(x["peak_rss_mb"] for x in base_runs),
                                   "cpu_s": med("cpu_s", base_runs)}
            summary["wall_ratio_to_baseline"] = summary["wall_s"] / summary["baseline"]["wall_s"]
            summary["cpu_ratio_to_baseline"] = summary["cpu_s"] / summary["baseline"]["cpu_s"]
            summary["peak_ratio_to_baseline"] = summary["peak_rss_mb"] / summary["baseline"]["peak_rss_mb"]
        res["modes"][mode] = {"summary": summary, "runs": runs, "baseline_runs": base_runs}
        b = summary.get("baseline")
        rows.append([mode, summary["images"], summary["backbone_inputs"], f"{summary['seconds']:.1f}",
                     f"{summary['wall_s']:.1f}" + (f" (baseline {b['wall_s']:.1f})" if b else ""),
                     f"{summary['images_per_s']:.1f}", f"{summary['inputs_per_s']:.1f}",
                     f"{summary['peak_rss_mb']:.0f}" + (f" (baseline {b['peak_rss_mb']:.0f})" if b else ""),
                     f"{summary['cpu_s'] / summary['wall_s']:.2f}",
                     f"{summary['other_cpu_cores']:.2f}", summary["loadavg"], f"{summary['cache_mb']:.0f}"])
    targets = {}
    key = "all-views" if "all-views" in res["modes"] else "views"
    if key in res["modes"]:
        s = res["modes"][key]["summary"]
        targets = {"with_views_wall_s": C.target(round(s["wall_s"], 2), TARGET_S),
                   "peak_rss_mb": C.target(round(max(m["summary"]["peak_rss_mb"] for m in res["modes"].values()), 1),
                                           TARGET_MB)}
    res["targets"] = targets
    path = C.write_results(args.out, res)
    print(f"\nBUSI extraction ({data}), {res['machine']['cores']} cores, {res['machine']['cpu_model']}, "
          f"load avg at start {res['loadavg_start']}")
    print(C.table(rows, ["mode", "images", "backbone inputs", "extract s", "child wall s", "images/s", "inputs/s",
                         "peak RSS MB", "cores used", "other procs cores", "load avg", "cache MB"]))
    if targets:
        print()
        print(C.table([C.fmt_target(f"BUSI {key}, wall", targets["with_views_wall_s"], " s"),
                       C.fmt_target("peak RSS", targets["peak_rss_mb"], " MB")],
                      ["target", "measured", "limit", "result"]))
    print(f"\nwrote {path.relative_to(C.REPO)}")


if __name__ == "__main__":
    main()
