"""How extraction and training time grow with the number of images.

BUSI is replicated xF with synthetic variation: replica r >= 1 of every image is
flipped left-right (odd r), shifted by up to +-6 % of its size (zero fill) and
brightness-scaled by 0.85..1.15 (the masks get the same flip and shift), written as
PNG (compress level 1) into a temp tree; replica 0 is the original file (symlinked).
For each size: a cold extraction with views (roi, masked, mask) in a child process,
then one training run of the plain head (lr 1e-4, batch 32, 50 epochs, seed 0),
masks off (model-7) and on (model-7p), via experiments.run_one, in another child
(NumPy's BLAS on one thread by default, --train-blas).
The duplicate grouping (data.duplicate_groups, part of extraction) is timed too.
Fits time ~ n^k on log-log and plots benchmarks/results/scale.png.

    python benchmarks/bench_scale.py [--data DIR] [--backbone FILE] [--factors 1,4,16]
                                     [--budget-s 1500]

x16 (12,480 images) is only run when its estimate from x1 and x4 (build + extract +
train) fits in --budget-s; otherwise x2 and x8 are run instead (and the JSON says so).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from busi_lite.features.cache import FeatureCache
from busi_lite.model.config import Config

SHIFT, BRIGHT = 0.06, 0.15
TRAIN_BLAS = "1"  # NumPy BLAS threads of the training child (--train-blas)


# ---------------------------------------------------------------- synthetic replicas
def _replica(src_root: Path, dst_root: Path, sample, r: int) -> int:
    """Write replica r of one sample (image + its masks) under dst_root; returns bytes written."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([r, zlib.crc32(sample.path.encode())])
    flip = r % 2 == 1
    written = 0

    def transform(a, dx, dy):
        if flip:
            a = a[:, ::-1]
        out = np.zeros_like(a)
        H, W = a.shape[:2]
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[yd, xd] = a[ys, xs]
        return out

    with Image.open(src_root / sample.path) as im:
        mode = im.mode if im.mode in ("L", "RGB") else "RGB"
        a = np.asarray(im.convert(mode))
    H, W = a.shape[:2]
    dx = int(rng.integers(-int(SHIFT * W), int(SHIFT * W) + 1))
    dy = int(rng.integers(-int(SHIFT * H), int(SHIFT * H) + 1))
    gain = rng.uniform(1 - BRIGHT, 1 + BRIGHT)
    img = np.clip(transform(a, dx, dy).astype(np.float32) * gain, 0, 255).astype(np.uint8)

    def save(arr, rel_src: str, mode_):
        nonlocal written
        stem, sep, rest = Path(rel_src).name.partition("_mask")   # "x (1).png" | "x (1)", "_mask", "_1.png"
        stem = stem if sep else stem.rsplit(".", 1)[0]
        name = f"{stem} r{r}" + (f"_mask{rest.rsplit('.', 1)[0]}" if sep else "") + ".png"
        out = dst_root / Path(rel_src).parent / name
        Image.fromarray(np.ascontiguousarray(arr), mode_).save(out, "PNG", compress_level=1)
        written += out.stat().st_size

    save(img, sample.path, mode)
    for mp in sample.mask_paths:
        with Image.open(src_root / mp) as m:
            ma = (np.asarray(m.convert("L")) >= 128).astype(np.uint8) * 255
        save(transform(ma, dx, dy), mp, "L")
    return written


class Pool:
    """Replica files built once in a pool dir; a tree for xF links replicas 0..F-1."""

    def __init__(self, data: Path, work: Path):
        from busi_lite.io import data as D

        self.data, self.work = data, work
        self.ds = D.discover(data)
        self.pool = work / "pool"
        for c in self.ds.classes:
            (self.pool / c).mkdir(parents=True, exist_ok=True)
        self.built = 1  # replica 0 = the originals
        self.build_s, self.bytes = 0.0, 0

    def ensure(self, factor: int) -> float:
        """Build replicas up to factor-1; returns seconds spent now."""
        t0 = time.perf_counter()
        todo = [(s, r) for r in range(self.built, factor) for s in self.ds.samples]
        if todo:
            C.log(f"  writing {len(todo)} synthetic images (replicas {self.built}..{factor - 1}) ...")
            with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
                self.bytes += sum(ex.map(lambda t: _replica(self.data, self.pool, t[0], t[1]), todo))
            self.built = factor
        dt = time.perf_counter() - t0
        self.build_s += dt
        return dt

    def tree(self, factor: int) -> Path:
        root = self.work / f"x{factor}"
        if root.exists():
            return root
        for c in self.ds.classes:
            (root / c).mkdir(parents=True)
        for s in self.ds.samples:
            for rel in (s.path,) + s.mask_paths:
                (root / rel).symlink_to(self.data / rel)
        for f in self.pool.rglob("*.png"):
            r = int(f.stem.split(" r")[-1].split("_")[0])
            if r < factor:
                (root / f.parent.name / f.name).symlink_to(f)
        return root


# ---------------------------------------------------------------- child tasks
def child_extract(args) -> dict:
    from busi_lite.features.cache import extract

    t0 = time.perf_counter()
    s = extract(args.tree, args.cache, args.backbone, views=("roi", "masked", "mask"), force=True, progress=False,
                log=lambda m: None)
    import h5py

    with h5py.File(args.cache, "r") as f:
        inputs = int(sum(f[f"valid/{v}"][:].sum() for v in f["valid"]))
    return {"images": s["images"], "backbone_inputs": inputs, "seconds": time.perf_counter() - t0,
            "problems": len(s["problems"]), "cache_mb": Path(args.cache).stat().st_size / 1e6}


def child_train(args) -> dict:
    import h5py

    from busi_lite.io import data as D
    from busi_lite.training import experiments as E

    cache = FeatureCache(args.cache)
    with h5py.File(args.cache, "r") as f:
        sha, ph = list(f["index/content_sha256"].asstr()[:]), f["index/phash"][:]
    t0 = time.perf_counter()
    D.duplicate_groups(sha, ph)
    dedup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for v in cache.views:
        cache.valid(v)
        cache.pooled(v)
    load_s = time.perf_counter() - t0
    out = {"dedup_seconds": dedup_s, "load_seconds": load_s, "n_groups": int(len(set(cache.groups.tolist())))}
    for masks in (False, True):
        cfg = Config.build(name="model-7p" if masks else "model-7", lr=1e-4, batch=32, epochs=50, masks=masks)
        r = E.run_one(cache, cfg, 0)
        out[cfg.name] = {"train_seconds": r["train_seconds"], "n_train_samples": r["n_train_samples"],
                         "accuracy": r["test"]["accuracy"]}
    return out


# ---------------------------------------------------------------- parent
def fit_k(ns, ts) -> dict:
    import numpy as np

    if len(ns) < 2:
        return {"k": None}
    k, b = np.polyfit(np.log(ns), np.log(ts), 1)
    return {"k": float(k), "log_c": float(b), "points": len(ns)}


def predict_t(fit, n):
    return math.exp(fit["log_c"]) * n ** fit["k"]


def run_size(pool: Pool, factor: int, backbone: Path, work: Path) -> dict:
    build_s = pool.ensure(factor)
    tree = pool.tree(factor)
    cache = work / f"x{factor}.h5"
    C.log(f"x{factor}: extracting {tree} ...")
    me, e = C.child(__file__, "extract", "--tree", tree, "--cache", cache, "--backbone", backbone)
    C.log(f"  {e['images']} images, {e['backbone_inputs']} inputs: {e['seconds']:.1f}s, peak "
          f"{me['peak_rss_mb']:.0f} MB, other processes {me['other_cpu_cores']:.2f} cores")
    C.log(f"x{factor}: training ...")
    env = None if TRAIN_BLAS == "default" else dict(os.environ, OPENBLAS_NUM_THREADS=TRAIN_BLAS,
                                                     OMP_NUM_THREADS=TRAIN_BLAS, MKL_NUM_THREADS=TRAIN_BLAS)
    mt, t = C.child(__file__, "train", "--cache", cache, env=env)
    C.log(f"  model-7 {t['model-7']['train_seconds']:.1f}s, model-7p {t['model-7p']['train_seconds']:.1f}s, dedup "
          f"{t['dedup_seconds']:.1f}s, peak {mt['peak_rss_mb']:.0f} MB")
    cache.unlink()
    return {"factor": factor, "images": e["images"], "backbone_inputs": e["backbone_inputs"],
            "build_seconds": build_s, "extract_seconds": e["seconds"], "extract_wall_s": me["wall_s"],
            "extract_peak_rss_mb": me["peak_rss_mb"], "extract_other_cpu_cores": me["other_cpu_cores"],
            "extract_quiet_wait": me.get("quiet_wait"), "cache_mb": e["cache_mb"],
            "train_model7_seconds": t["model-7"]["train_seconds"], "train_model7_samples": t["model-7"]["n_train_samples"],
            "train_model7p_seconds": t["model-7p"]["train_seconds"],
            "train_model7p_samples": t["model-7p"]["n_train_samples"], "dedup_seconds": t["dedup_seconds"],
            "n_groups": t["n_groups"], "train_peak_rss_mb": mt["peak_rss_mb"],
            "train_other_cpu_cores": mt["other_cpu_cores"], "problems": e["problems"]}


SERIES = [("extract_seconds", "extraction (with views)", "o-"),
          ("dedup_seconds", "duplicate grouping (part of extraction)", "d--")]
TRAIN_SERIES = [("train_model7_seconds", "train_model7_samples", "model-7 (no masks)", "s-"),
                ("train_model7p_seconds", "train_model7p_samples", "model-7p (masks)", "^-")]


def compute_fits(sizes) -> dict:
    ns = [s["images"] for s in sizes]
    fits = {key: fit_k(ns, [s[key] for s in sizes]) for key, _, _ in SERIES}
    for key, nkey, _, _ in TRAIN_SERIES:
        fits[key] = fit_k(ns, [s[key] for s in sizes])                            # vs source images
        fits[key + "_vs_samples"] = fit_k([s[nkey] for s in sizes], [s[key] for s in sizes])
    return fits


def _fmt_s(t):
    return f"{t:.2g}s" if t < 1 else f"{t:.1f}s"


def _series(ax, xs, ts, f, label, style, xlim):
    import numpy as np

    line, = ax.plot(xs, ts, style, ms=7, lw=0, label=f"{label}: k = {f['k']:.2f}")
    grid = np.geomspace(*xlim, 50)
    ax.plot(grid, np.exp(f["log_c"]) * grid ** f["k"], "-", color=line.get_color(), lw=1.2, alpha=0.7)
    for x, t in zip(xs, ts):
        ax.annotate(_fmt_s(t), (x, t), textcoords="offset points", xytext=(6, -4), fontsize=8, color=line.get_color())


def plot(sizes, fits, res, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    ns = np.array([s["images"] for s in sizes], float)
    for key, label, style in SERIES:
        _series(ax1, ns, [s[key] for s in sizes], fits[key], label, style, (ns.min() * 0.8, ns.max() * 1.25))
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xticks(ns)
    ax1.set_xticklabels([f"{int(n):,}\n(x{s['factor']})" for n, s in zip(ns, sizes)])
    ax1.minorticks_off()
    ax1.set_xlabel("source images (BUSI replicated with synthetic variation)")
    ax1.set_ylabel("seconds (log scale)")
    ax1.set_title("Feature extraction, cold, views roi/masked/mask")
    for key, nkey, label, style in TRAIN_SERIES:
        xs = np.array([s[nkey] for s in sizes], float)
        _series(ax2, xs, [s[key] for s in sizes], fits[key + "_vs_samples"], label, style,
                (xs.min() * 0.8, xs.max() * 1.25))
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("training samples (images + their mask views for model-7p)")
    ax2.set_ylabel("seconds (log scale)")
    ax2.set_title(f"Training, plain head, 50 epochs (BLAS {res.get('train_blas_threads', '?')} thread)")
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
    mc = res["machine"]
    other = np.mean([s["extract_other_cpu_cores"] for s in sizes])
    fig.suptitle(f"busi-lite scaling, time ~ n^k   |   {mc['cpu_model']}, {mc['cores']} cores, {res['date'][:10]}; "
                 f"other processes used {other:.1f} cores on average during extraction", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def finish(res) -> Path:
    """Fits, plot, tables, JSON (also used by --replot on a saved scale.json)."""
    sizes = sorted(res["sizes"], key=lambda s: s["images"])
    res["sizes"] = sizes
    res["fits"] = fits = compute_fits(sizes)
    png = C.RESULTS / "scale.png"
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    plot(sizes, fits, res, png)
    res["plot"] = str(png.relative_to(C.REPO))
    print(f"\nScaling on {res['machine']['cores']} cores, {res['machine']['cpu_model']}, load avg at start "
          f"{res['loadavg_start']}; {res['plan']}")
    rows = [[f"x{s['factor']}", s["images"], s["backbone_inputs"], f"{s['extract_seconds']:.1f}",
             f"{s['images'] / s['extract_seconds']:.1f}", f"{s['extract_peak_rss_mb']:.0f}",
             f"{s['dedup_seconds']:.2f}", s["n_groups"], f"{s['train_model7_seconds']:.2f} ({s['train_model7_samples']})",
             f"{s['train_model7p_seconds']:.2f} ({s['train_model7p_samples']})", f"{s['train_peak_rss_mb']:.0f}",
             f"{s['extract_other_cpu_cores']:.2f}"] for s in sizes]
    print(C.table(rows, ["size", "images", "backbone inputs", "extract s", "images/s", "extract peak MB",
                         "dedup s", "dup groups", "train model-7 s (samples)", "train model-7p s (samples)",
                         "train peak MB", "other procs cores (extract)"]))
    print()
    krows = [[label, "source images", f"{fits[key]['k']:.2f}"] for key, label, _ in SERIES]
    for key, _, label, _ in TRAIN_SERIES:
        krows.append([f"training {label}", "training samples", f"{fits[key + '_vs_samples']['k']:.2f}"])
        krows.append([f"training {label}", "source images", f"{fits[key]['k']:.2f}"])
    print(C.table(krows, ["time ~ n^k", "n =", "k"]))
    return png


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--factors", default="1,4,16", help="replication factors; the last is run only if the "
                   "estimate from the first two fits --budget-s")
    p.add_argument("--fallback", default="2,8", help="factors run instead of the last one when it does not fit")
    p.add_argument("--budget-s", type=float, default=1500.0, help="time allowed for the largest size (estimate)")
    p.add_argument("--workdir", help="where the synthetic trees go (default: a temp dir, removed at the end)")
    p.add_argument("--train-blas", default="1", help="OPENBLAS_NUM_THREADS for the training runs "
                   "('default' = library default); 1 keeps timings stable on a shared 2-core machine")
    p.add_argument("--replot", action="store_true", help="only redo fits, plot and tables from results/scale.json")
    p.add_argument("--tree", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    C.add_quiet_args(p)
    C.add_child_args(p)
    args = p.parse_args(argv)
    C.configure(args)
    if args.child:
        C.child_result(args.child_out, {"extract": child_extract, "train": child_train}[args.child](args))
        return
    if args.replot:  # fits, plot and tables again from results/scale.json, no measuring
        import json

        path = C.RESULTS / "scale.json"
        res = json.loads(path.read_text())
        finish(res)
        path.write_text(json.dumps(res, indent=1, default=C._default) + "\n")
        print(f"\nrewrote {path.relative_to(C.REPO)} and {res['plot']}")
        return
    global TRAIN_BLAS
    TRAIN_BLAS = args.train_blas
    data, backbone = C.data_path(args), C.backbone_path(args)
    factors = [int(x) for x in args.factors.split(",")]
    res = C.header()
    res.update(data=str(data), backbone=str(backbone), variation={"flip": "odd replicas", "shift": SHIFT,
                                                                  "brightness": BRIGHT},
               factors_asked=factors, budget_s=args.budget_s, train_blas_threads=TRAIN_BLAS)
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=args.workdir) as td:
        work = Path(td)
        pool = Pool(data, work)
        for f in factors[:-1]:
            sizes.append(run_size(pool, f, backbone, work))
        # estimate the last size from the ones done
        last = factors[-1]
        n0 = len(pool.ds.samples)
        est = {}
        if len(sizes) >= 2:
            per_img_build = sizes[-1]["build_seconds"] / max(1, (sizes[-1]["factor"] - sizes[0]["factor"]) * n0)
            fe = fit_k([s["images"] for s in sizes], [s["extract_seconds"] for s in sizes])
            ft = fit_k([s["images"] for s in sizes], [s["train_model7_seconds"] + s["train_model7p_seconds"]
                                                       + s["dedup_seconds"] for s in sizes])
            n_last = n0 * last
            est = {"images": n_last, "build_s": per_img_build * (last - sizes[-1]["factor"]) * n0,
                   "extract_s": predict_t(fe, n_last), "train_s": predict_t(ft, n_last),
                   "k_extract_so_far": fe["k"]}
            est["total_s"] = est["build_s"] + est["extract_s"] + est["train_s"]
            C.log(f"estimate for x{last} ({n_last} images): build {est['build_s']:.0f}s + extract "
                  f"{est['extract_s']:.0f}s + train {est['train_s']:.0f}s = {est['total_s']:.0f}s "
                  f"(budget {args.budget_s:.0f}s)")
        res["estimate_largest"] = est
        if not est or est["total_s"] <= args.budget_s:
            run_factors = [last]
            res["plan"] = f"x{last} fits the budget: ran factors {factors}"
        else:
            run_factors = [int(x) for x in args.fallback.split(",")]
            res["plan"] = (f"x{last} estimated at {est['total_s']:.0f}s > budget {args.budget_s:.0f}s on this "
                           f"machine: ran {sorted(set(factors[:-1]) | set(run_factors))} instead")
        C.log(res["plan"])
        for f in run_factors:
            sizes.append(run_size(pool, f, backbone, work))
        res["synthetic_build_seconds"] = pool.build_s
        res["synthetic_mb"] = pool.bytes / 1e6
    res["sizes"] = sizes
    finish(res)
    path = C.write_results("scale", res)
    print(f"\nwrote {path.relative_to(C.REPO)} and {res['plot']}")


if __name__ == "__main__":
    main()
