"""Inference through the full Predictor path (decode + preprocess + backbone + head + flags).

    python benchmarks/bench_inference.py [--data DIR] [--backbone FILE]
                                         [--model STEM ... | --cache FILE] [--images 100]

Models: by default a plain (model-7) and a multi-task (model-7+mtl) model are trained
into a temp dir from a cache extracted there (experiments.fit_model with --folds
calibration folds + Model.save); or pass --model STEM (repeatable) for saved models.
Per model:
  warm      busi_lite.serving.inference.Predictor(model, backbone), 5 warm-up calls, then
            predict([path]) one image at a time over ~N BUSI images (every k-th file,
            all classes): p50 / p95 / mean latency; in a child process (peak RSS);
  cold      `busi-lite predict ONE.png --model M --backbone B` as a new process, 5x:
            median wall time (interpreter start to exit) and peak RSS;
  folder    `busi-lite predict DIR --model M --backbone B` on a folder of N images:
            images/s end to end (startup included) and after startup.
Files are read from the OS page cache (they were read before): "cold" means a new
process, not a cold disk.

Targets: warm p50 <= 20 ms, p95 <= 40 ms; cold single image <= 1.5 s and <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

TARGETS = {"p50_ms": 20.0, "p95_ms": 40.0, "cold_s": 1.5, "cold_mb": 300.0}
WARMUP, COLD_REPEATS = 5, 5


def pick_images(data: Path, n: int) -> list[Path]:
    from busi_lite.io import data as D

    s = D.discover(data).samples
    step = max(1, len(s) // n)
    return [data / x.path for x in s[::step]][:n]


def child_warm(args) -> dict:
    import numpy as np

    from busi_lite.serving.inference import Predictor

    paths = [Path(p) for p in json.loads(Path(args.list).read_text())]
    t0 = time.perf_counter()
    pr = Predictor(args.model_stem, args.backbone)
    load_s = time.perf_counter() - t0
    for p in paths[:WARMUP]:
        pr.predict([p])
    lat, labels, flagged, failed = [], {}, 0, 0
    for p in paths:
        t0 = time.perf_counter()
        out = pr.predict([p])
        lat.append(time.perf_counter() - t0)
        r = out[0]
        if not r.ok:
            failed += 1
            continue
        labels[r.label] = labels.get(r.label, 0) + 1
        flagged += bool(r.flags)
    ms = np.array(lat) * 1000
    # the same images in one call (batched by the Predictor), for comparison
    t0 = time.perf_counter()
    pr.predict(paths)
    batch_s = time.perf_counter() - t0
    return {"n": len(paths), "load_s": load_s, "latency_ms": ms.tolist(), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "labels": labels, "flagged": flagged, "failed": failed,
            "one_call_images_per_s": len(paths) / batch_s, "head": pr.model.head.kind}


def cli_cmd() -> list[str]:
    exe = shutil.which("busi-lite") or str(Path(sys.executable).parent / "busi-lite")
    return [exe, "predict"]


def train_models(data, backbone, cache_arg, work: Path, folds: int) -> tuple[list[Path], dict]:
    info = {}
    if cache_arg:
        cache = Path(cache_arg)
    else:
        cache = work / "cache.h5"
        C.log("extracting a cache (no views needed for model-7) into a temp dir (setup) ...")
        subprocess.run([sys.executable, "-m", "busi_lite.cli", "extract", "--data", str(data), "--backbone",
                        str(backbone), "--out", str(cache), "--views", ""], check=True, stdout=subprocess.DEVNULL)
    from busi_lite.training import experiments as E

    fc = FeatureCache(cache)
    stems = []
    for head in ("plain", "mtl"):
        cfg = Config.build(name="model-7" + ("+mtl" if head == "mtl" else ""), lr=1e-4, batch=32, epochs=50, head=head)
        C.log(f"training {cfg.name} (fit_model, {folds} calibration folds; setup) ...")
        t0 = time.perf_counter()
        model, meta = E.fit_model(fc, cfg, seed=0, folds=folds)
        stem = work / cfg.name.replace("+", "_")
        model.save(stem)
        stems.append(stem)
        info[cfg.name] = {"seconds": time.perf_counter() - t0, "test_accuracy": meta["metrics"]["test_argmax"]["accuracy"]}
    return stems, info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--model", action="append", help="saved model stem (NAME for NAME.npz + NAME.json); repeatable")
    p.add_argument("--cache", help="feature cache to train the default models from (default: extract one)")
    p.add_argument("--images", type=int, default=100, help="images for the warm and folder runs")
    p.add_argument("--folds", type=int, default=3, help="calibration folds when training the models")
    p.add_argument("--list", help=argparse.SUPPRESS)
    p.add_argument("--model-stem", help=argparse.SUPPRESS)
    C.add_quiet_args(p)
    C.add_child_args(p)
    args = p.parse_args(argv)
    C.configure(args)
    if args.child:
        C.child_result(args.child_out, child_warm(args))
        return
    data, backbone = C.data_path(args), C.backbone_path(args)
    res = C.header()
    res.update(data=str(data), backbone=str(backbone), images=args.images,
               models={})
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as td:
        work = Path(td)
        if args.model:
            stems, res["trained"] = [Path(m) for m in args.model], None
        else:
            stems, res["trained"] = train_models(data, backbone, args.cache, work, args.folds)
        imgs = pick_images(data, args.images)
        lst = work / "images.json"
        lst.write_text(json.dumps([str(x) for x in imgs]))
        folder = work / "folder"
        folder.mkdir()
        for i, x in enumerate(imgs):  # flat folder of links, unique names
            (folder / f"{i:03d}_{x.name}").symlink_to(x)
        rows, trows = [], []
        for stem in stems:
            name = stem.name
            C.log(f"{name}: warm latency over {len(imgs)} images ...")
            mw, w = C.child(__file__, "warm", "--list", lst, "--model-stem", stem, "--backbone", backbone)
            C.log(f"  p50 {w['p50_ms']:.1f} ms, p95 {w['p95_ms']:.1f} ms, mean {w['mean_ms']:.1f} ms; "
                  f"other processes {mw['other_cpu_cores']:.2f} cores")
            cold = []
            for i in range(COLD_REPEATS):
                m = C.measure(cli_cmd() + [imgs[i * 7 % len(imgs)], "--model", stem, "--backbone", backbone],
                              quiet=True)
                cold.append(m)
            cold_s = statistics.median(m["wall_s"] for m in cold)
            cold_mb = statistics.median(m["peak_rss_mb"] for m in cold)
            C.log(f"  cold single image: {cold_s:.2f}s, {cold_mb:.0f} MB (median of {COLD_REPEATS})")
            mf = C.measure(cli_cmd() + [folder, "--model", stem, "--backbone", backbone], quiet=True)
            after = max(mf["wall_s"] - cold_s, 1e-9)
            folder_r = {"wall_s": mf["wall_s"], "peak_rss_mb": mf["peak_rss_mb"], "images_per_s": len(imgs) / mf["wall_s"],
                        "images_per_s_after_startup": (len(imgs) - 1) / after, "other_cpu_cores": mf["other_cpu_cores"],
                        "quiet_wait": mf.get("quiet_wait")}
            C.log(f"  folder of {len(imgs)}: {mf['wall_s']:.1f}s -> {folder_r['images_per_s']:.1f} images/s")
            t = {"p50_ms": C.target(round(w["p50_ms"], 2), TARGETS["p50_ms"]),
                 "p95_ms": C.target(round(w["p95_ms"], 2), TARGETS["p95_ms"]),
                 "cold_s": C.target(round(cold_s, 3), TARGETS["cold_s"]),
                 "cold_peak_mb": C.target(round(cold_mb, 1), TARGETS["cold_mb"])}
            res["models"][name] = {"stem": str(stem) if args.model else f"(temp) {name}", "warm": w,
                                   "warm_process": mw, "cold_runs": cold, "cold_median_s": cold_s,
                                   "cold_median_peak_mb": cold_mb, "folder": folder_r, "targets": t}
            rows.append([name, w["head"], f"{w['p50_ms']:.1f}", f"{w['p95_ms']:.1f}", f"{w['mean_ms']:.1f}",
                         f"{mw['peak_rss_mb']:.0f}", f"{cold_s:.2f}", f"{cold_mb:.0f}",
                         f"{folder_r['images_per_s']:.1f}", f"{folder_r['images_per_s_after_startup']:.1f}",
                         f"{mw['other_cpu_cores']:.2f}"])
            trows += [[name] + C.fmt_target("warm p50", t["p50_ms"], " ms"),
                      [name] + C.fmt_target("warm p95", t["p95_ms"], " ms"),
                      [name] + C.fmt_target("cold wall", t["cold_s"], " s"),
                      [name] + C.fmt_target("cold peak RSS", t["cold_peak_mb"], " MB")]
    path = C.write_results("inference", res)
    print(f"\nInference, {res['machine']['cores']} cores, {res['machine']['cpu_model']}, load avg at start "
          f"{res['loadavg_start']}; {len(imgs)} BUSI images")
    print(C.table(rows, ["model", "head", "warm p50 ms", "warm p95 ms", "warm mean ms", "warm proc peak MB",
                         "cold 1 image s", "cold peak MB", f"folder of {len(imgs)} images/s", "folder images/s after startup",
                         "other procs cores (warm)"]))
    print()
    print(C.table(trows, ["model", "target", "measured", "limit", "result"]))
    print(f"\nwrote {path.relative_to(C.REPO)}")


if __name__ == "__main__":
    main()
