"""busi-lite's prediction speed against the physical floor of the same work, in ONE run.

    python benchmarks/bench_floor.py [--data DIR] [--backbone FILE] [--model STEM]
                                     [--images 100] [--rounds 3] [--cold 7] [--out NAME]

Floor pieces (the least the same work costs, measured here, interleaved with busi-lite's own
calls so that both see the same machine load):
  decode    Pillow: open, convert to RGB, centre square crop + antialiased resize to 224, to float;
  backbone  one onnxruntime run of the model's backbone session on the image and its mirror
            (flip averaging; the image alone for a model without it): the batch predict uses;
  head      the model's head on those features (Model.predict_features).
Figures, each printed as a ratio to its floor:
  warm single  Predictor.predict([one file]) per image, p50 over --images images x --rounds,
               vs the p50 of decode + backbone + head of the same image, measured alternately;
  warm folder  Predictor.predict([folder of --images files]) images/s, vs decode of every file
               + backbone in batches of the Predictor's batch_size (decode + backbone alone,
               serial): ratio = busi-lite's throughput / the floor's (>= 0.8 wanted);
  cold CLI     `python -m busi_lite.cli predict ONE.png` (whole process, measured from outside:
               interpreter start to exit, peak RSS) vs benchmarks/minimal_predict.py (the same
               decode, two backbone passes and a linear head in 12 lines), --cold paired runs,
               alternating which goes first; byte-code cached for both (in a temp folder), as
               an installed package has it.
The load average (1/5/15 min) and the CPU used by other processes are recorded beside every figure.
Targets: warm single <= 1.25x; folder >= 0.8x; cold CLI <= 1.4x. Writes results/bench_floor.json (--out NAME).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGETS = {"warm_single": ("<=", 1.25), "warm_folder": (">=", 0.8), "cold_cli": ("<=", 1.4)}
MINIMAL = Path(__file__).resolve().parent / "minimal_predict.py"


def pick_images(data: Path, n: int) -> list[Path]:
    imgs = sorted(p for p in data.rglob("*.png") if "_mask" not in p.name)
    step = max(1, len(imgs) // n)
    return imgs[::step][:n]


def decode(path: Path) -> np.ndarray:
    """The floor's decode: Pillow open + RGB + centre crop + resize, as float32 [224,224,3] in [-1,1]."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        s = min(im.size)
        l, t = (im.size[0] - s) // 2, (im.size[1] - s) // 2
        a = np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR, box=(l, t, l + s, t + s)), np.float32)
    return a / np.float32(127.5) - np.float32(1.0)


class Busy:
    """Load average and CPU used by OTHER processes over a span (from /proc/stat)."""

    def __init__(self):
        self.la0, self.b0, self.c0, self.t0 = C.loadavg(), _busy(), time.process_time(), time.perf_counter()

    def done(self) -> dict:
        wall = time.perf_counter() - self.t0
        other = (_busy() - self.b0) - (time.process_time() - self.c0)
        return {"loadavg_before": self.la0, "loadavg_after": C.loadavg(),
                "other_cpu_cores": round(max(0.0, other) / wall, 2) if wall > 0 else None}


def _busy() -> float:
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def floor_single(pr, path: Path) -> dict:
    t0 = time.perf_counter()
    x = decode(path)
    t1 = time.perf_counter()
    batch = np.stack([x, x[:, ::-1]]) if pr.flip else x[None]
    f = pr.backbone.session.run(["features"], {"input": batch})[0]
    t2 = time.perf_counter()
    pr.model.predict_features(f[:1], f[1:] if pr.flip else None)
    t3 = time.perf_counter()
    return {"decode": t1 - t0, "backbone": t2 - t1, "head": t3 - t2, "total": t3 - t0}


def floor_folder(pr, paths: list[Path]) -> dict:
    t0 = time.perf_counter()
    dec = bb = 0.0
    for s in range(0, len(paths), pr.batch_size):
        a = time.perf_counter()
        x = np.stack([decode(p) for p in paths[s:s + pr.batch_size]])
        b = time.perf_counter()
        if pr.flip:
            x = np.concatenate([x, x[:, :, ::-1]])
        pr.backbone.session.run(["features"], {"input": x})
        c = time.perf_counter()
        dec, bb = dec + b - a, bb + c - b
    return {"wall_s": time.perf_counter() - t0, "decode_s": dec, "backbone_s": bb}


def warm(pr, imgs: list[Path], folder: Path, rounds: int) -> dict:
    for p in imgs[:5]:  # warm-up both paths
        pr.predict([p])
        floor_single(pr, p)
    busy = Busy()
    ours, floor, pieces = [], [], {"decode": [], "backbone": [], "head": []}
    for r in range(rounds):
        for i, p in enumerate(imgs):
            first_ours = (i + r) % 2 == 0   # alternate which goes first
            if first_ours:
                t0 = time.perf_counter()
                pr.predict([p])
                ours.append(time.perf_counter() - t0)
            fl = floor_single(pr, p)
            floor.append(fl["total"])
            for k in pieces:
                pieces[k].append(fl[k])
            if not first_ours:
                t0 = time.perf_counter()
                pr.predict([p])
                ours.append(time.perf_counter() - t0)
    single = {"busi_lite_p50_ms": 1e3 * statistics.median(ours), "floor_p50_ms": 1e3 * statistics.median(floor),
              "floor_pieces_p50_ms": {k: 1e3 * statistics.median(v) for k, v in pieces.items()},
              "busi_lite_p95_ms": 1e3 * float(np.percentile(ours, 95)), "n": len(ours), **busy.done()}
    single["ratio"] = single["busi_lite_p50_ms"] / single["floor_p50_ms"]
    busy = Busy()
    pr.predict([folder])  # warm-up
    ours_s, floor_runs = [], []
    for r in range(rounds):
        pair = [("ours", None), ("floor", None)] if r % 2 == 0 else [("floor", None), ("ours", None)]
        for kind, _ in pair:
            if kind == "ours":
                t0 = time.perf_counter()
                out = pr.predict([folder])
                ours_s.append(time.perf_counter() - t0)
                assert len(out) == len(imgs) and all(p.ok for p in out), "folder prediction failed"
            else:
                floor_runs.append(floor_folder(pr, imgs))
    f_wall = statistics.median(f["wall_s"] for f in floor_runs)
    fold = {"images": len(imgs), "batch_size": pr.batch_size, "busi_lite_images_per_s": len(imgs) / statistics.median(ours_s),
            "floor_images_per_s": len(imgs) / f_wall, "busi_lite_wall_s": ours_s, "floor_runs": floor_runs,
            **busy.done()}
    fold["ratio"] = fold["busi_lite_images_per_s"] / fold["floor_images_per_s"]
    return {"warm_single": single, "warm_folder": fold}


def cold(img: Path, model_stem, npz: Path, backbone: Path, n: int) -> dict:
    cli = [sys.executable, "-m", "busi_lite.cli", "predict", img, "--backbone", backbone]
    if model_stem:
        cli += ["--model", model_stem]
    mini = [sys.executable, MINIMAL, img, backbone, npz]
    with tempfile.TemporaryDirectory(prefix="bench_floor_pyc_") as pyc:
        # byte-code cached as an installed package has it (this environment may set PYTHONDONTWRITEBYTECODE)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pyc
        for cmd in (cli, mini, cli, mini):  # compile + page cache, for both
            C.measure(cmd, env=env, quiet=True, wait=False)
        runs = []
        for i in range(n):
            order = [("cli", cli), ("minimal", mini)] if i % 2 == 0 else [("minimal", mini), ("cli", cli)]
            runs.append({k: C.measure(cmd, env=env, quiet=True, wait=False) for k, cmd in order})
    med = {k: statistics.median(r[k]["wall_s"] for r in runs) for k in ("cli", "minimal")}
    rss = {k: statistics.median(r[k]["peak_rss_mb"] for r in runs) for k in ("cli", "minimal")}
    cpu = {k: statistics.median(r[k]["cpu_s"] for r in runs) for k in ("cli", "minimal")}
    return {"cli_median_s": med["cli"], "minimal_median_s": med["minimal"], "cli_peak_mb": rss["cli"],
            "cli_cpu_s": cpu["cli"], "minimal_cpu_s": cpu["minimal"], "cpu_ratio": cpu["cli"] / cpu["minimal"],
            "minimal_peak_mb": rss["minimal"], "ratio": med["cli"] / med["minimal"],
            "pair_ratio_median": statistics.median(r["cli"]["wall_s"] / r["minimal"]["wall_s"] for r in runs),
            "runs": runs, "loadavg_before": runs[0]["cli"]["loadavg_before"],
            "loadavg_after": runs[-1]["cli"]["loadavg_after"],
            "other_cpu_cores": round(statistics.median(r[k]["other_cpu_cores"] for r in runs for k in r), 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--model", help="saved model stem (default: the shipped model)")
    p.add_argument("--images", type=int, default=100, help="images for the warm runs and the folder")
    p.add_argument("--rounds", type=int, default=3, help="passes over the images (warm single) / folder runs")
    p.add_argument("--cold", type=int, default=7, help="paired cold-process runs")
    p.add_argument("--out", default="bench_floor", help="results/NAME.json to write (default bench_floor)")
    args = p.parse_args(argv)
    data, backbone = C.data_path(args), C.backbone_path(args)
    from busi_lite.common.resources import resolve
    from busi_lite.serving.inference import Predictor

    res = C.header()
    stem = resolve("model", args.model).path
    npz = stem.with_name(stem.name + ".npz") if stem.suffix != ".npz" else stem
    pr = Predictor(args.model, backbone)
    imgs = pick_images(data, args.images)
    res.update(data=str(data), backbone=str(backbone), model=str(stem), head=pr.model.head.kind, flip=pr.flip,
               preprocessing=pr.preprocessing.name, images=len(imgs),
               env={k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS")})
    with tempfile.TemporaryDirectory(prefix="bench_floor_") as td:
        folder = Path(td) / "folder"
        folder.mkdir()
        for i, x in enumerate(imgs):
            (folder / f"{i:03d}.png").symlink_to(x)
        links = sorted(folder.iterdir())
        C.log(f"warm single + folder: {len(imgs)} images x {args.rounds} rounds, load {C.loadavg()} ...")
        res.update(warm(pr, links, folder, args.rounds))
        C.log(f"cold CLI vs minimal script: {args.cold} pairs, load {C.loadavg()} ...")
        res["cold_cli"] = cold(imgs[0], args.model, npz, backbone, args.cold)
    res["targets"] = {k: C.target(round(res[k]["ratio"], 3), lim, op) for k, (op, lim) in TARGETS.items()}
    path = C.write_results(args.out, res)
    s, f, c = res["warm_single"], res["warm_folder"], res["cold_cli"]
    pc = s["floor_pieces_p50_ms"]
    rows = [["warm single (p50)", f"{s['busi_lite_p50_ms']:.1f} ms",
             f"{s['floor_p50_ms']:.1f} ms (decode {pc['decode']:.1f} + backbone {pc['backbone']:.1f} + head "
             f"{pc['head']:.2f})", f"{s['ratio']:.2f}x", "<= 1.25x", s["loadavg_before"], s["other_cpu_cores"]],
            [f"folder of {f['images']} (batch {f['batch_size']})", f"{f['busi_lite_images_per_s']:.1f} img/s",
             f"{f['floor_images_per_s']:.1f} img/s (decode + backbone)", f"{f['ratio']:.2f}x throughput", ">= 0.8x",
             f["loadavg_before"], f["other_cpu_cores"]],
            ["cold CLI (median)", f"{c['cli_median_s']:.2f} s, {c['cli_peak_mb']:.0f} MB",
             f"{c['minimal_median_s']:.2f} s, {c['minimal_peak_mb']:.0f} MB (minimal script)",
             f"{c['ratio']:.2f}x (CPU {c['cpu_ratio']:.2f}x)",
             "<= 1.4x", c["loadavg_before"], c["other_cpu_cores"]]]
    print(f"\nbusi-lite vs the floor, {res['machine']['cores']} cores, {res['machine']['cpu_model']}; "
          f"model {stem.name} ({res['head']}, flip {res['flip']})")
    print(C.table(rows, ["figure", "busi-lite", "floor", "ratio", "target", "load avg (1/5/15)",
                         "other procs cores"]))
    print("\n" + C.table([[k] + C.fmt_target(k, t, "x")[1:] for k, t in res["targets"].items()],
                         ["figure", "measured", "limit", "result"]))
    print(f"\nwrote {path.relative_to(C.REPO)}")


if __name__ == "__main__":
    main()
