"""Site-shift warning: how often does the batch check fire, on the other site and on held-out
images of the training sites (targets: >= 95 % and <= 5 % of 50-image batches).

    python benchmarks/shift_study.py [--busi CACHE] [--site CACHE] [--model weights/busi_lite_default]
        [--data BUSI_ROOT] [--backbone ONNX] [--batches 500] [--n 50]

Statistics are fitted as training does (busi_lite.training.shift.fit_shift on the training
images, OOD statistics from them; thresholds from held-out folds of the training images only):
  BUSI-only     training = BUSI split 0 training images; other site = all BUS-BRA-dev;
                held out = BUSI split 0 test images (115)
  BUS-BRA-only  training = BUS-BRA-dev minus fold 0 of a group 5-fold; other site = BUSI (all
                usable images); held out = that fold (~106)
  two sites     training = BUSI split 0 training + BUS-BRA-dev minus fold 0; held out = BUSI
                split 0 test images and BUS-BRA-dev fold 0, each site's batches on their own
Batches: ``--batches`` random batches of ``--n`` images (without replacement) per case.
Synthetic shifts (with --data and --backbone): the SHIPPED model (``--model``) on BUSI split 0
test images as they are, and with gain x1.8, Gaussian blur (radius 3), multiplicative speckle
(gamma, shape 2) and a colour tint (x[1, 0.75, 0.5]), features from the real backbone;
batches of ``--n`` of the 115. Also times the check's own cost per image (coordinates + statistic)
against the backbone's. Writes benchmarks/results/shift_study.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


class _M:
    def __init__(self, ood, info):
        self.ood, self.card = ood, type("Card", (), {"shift": info})()


def fitted(parts, seed=0):
    from busi_lite.model.model import OOD
    from busi_lite.training.shift import fit_shift
    ood = OOD.fit(np.concatenate([p[1] for p in parts]))
    return _M(ood, fit_shift(ood, parts, seed))


def fire_rate(m, pooled, n, batches, rng) -> float:
    from busi_lite.serving.shift import check_coords, image_coords
    u = image_coords(m, pooled)
    n = min(n, len(u))
    return float(np.mean([check_coords(m, u[rng.choice(len(u), n, replace=False)]).shifted for _ in range(batches)]))


def shifted(rgb: np.ndarray, kind: str, rng) -> np.ndarray:
    from PIL import Image, ImageFilter
    a = rgb.astype(np.float32)
    if kind == "gain":
        a = a * 1.8
    elif kind == "blur":
        a = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3))).astype(np.float32)
    elif kind == "speckle":
        a = a * rng.gamma(2.0, 0.5, a.shape[:2])[..., None]
    elif kind == "tint":
        a = a * np.array([1.0, 0.75, 0.5], np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busi", default="cache/busi_features.h5")
    p.add_argument("--site", default="cache/busbra-dev_features.h5")
    p.add_argument("--model", default=str(C.REPO / "weights" / "busi_lite_default"))
    p.add_argument("--batches", type=int, default=500)
    p.add_argument("--n", type=int, default=50)
    C.add_asset_args(p)
    args = p.parse_args(argv)

    from busi_lite.common.jsonio import write
    from busi_lite.features.cache import FeatureCache
    from busi_lite.io import data as D
    from busi_lite.training.shift import cache_site

    head = C.header()
    rng = np.random.default_rng(0)
    b, s = FeatureCache(args.busi), FeatureCache(args.site)
    sp = b.split(0)
    mixed = set(D.mixed_label_groups(b.groups, b.labels))
    b_all = np.array([i for i, g in enumerate(b.groups) if g not in mixed])
    fold = D.group_kfold(s.labels, s.groups, s.paths, 5, 0)
    s_tr, s_te = np.nonzero(fold != 0)[0], np.nonzero(fold == 0)[0]
    cases = {}
    m = fitted([cache_site("BUSI", b, sp.train)])
    cases["BUSI-only"] = {"other site (BUS-BRA-dev)": fire_rate(m, s.pooled("raw"), args.n, args.batches, rng),
                          "held out (BUSI test)": fire_rate(m, b.pooled("raw", sp.test), args.n, args.batches, rng)}
    m = fitted([cache_site("BUS-BRA-dev", s, s_tr)])
    cases["BUS-BRA-only"] = {"other site (BUSI)": fire_rate(m, b.pooled("raw", b_all), args.n, args.batches, rng),
                             "held out (BUS-BRA-dev fold)": fire_rate(m, s.pooled("raw", s_te), args.n, args.batches,
                                                                      rng)}
    m = fitted([cache_site("BUSI", b, sp.train), cache_site("BUS-BRA-dev", s, s_tr)])
    cases["two sites"] = {"held out (BUSI test)": fire_rate(m, b.pooled("raw", sp.test), args.n, args.batches, rng),
                          "held out (BUS-BRA-dev fold)": fire_rate(m, s.pooled("raw", s_te), args.n, args.batches,
                                                                   rng)}
    for name, r in cases.items():
        for k, v in r.items():
            C.log(f"{name}: {k}: fires on {100 * v:.1f} % of {args.batches} batches of {args.n}")
    out = {"cases": cases, "n": args.n, "batches": args.batches}

    if getattr(args, "data", None) or Path(C.DEFAULT_DATA).is_dir():
        from busi_lite.io.imread import read_rgb
        from busi_lite.serving.inference import Predictor
        from busi_lite.serving.shift import check_coords, image_coords

        data = C.data_path(args)
        pr = Predictor(args.model, C.backbone_path(args))
        rgbs = [read_rgb(data / b.paths[i]) for i in sp.test]
        syn = {}
        for kind in ("none", "gain", "blur", "speckle", "tint"):
            krng = np.random.default_rng(1)
            imgs = rgbs if kind == "none" else [shifted(x, kind, krng) for x in rgbs]
            t0 = time.perf_counter()
            preds = pr.predict_arrays(imgs, names=[f"{kind}{i}" for i in range(len(imgs))])
            t_pred = time.perf_counter() - t0
            u = np.array([q.shift_coords for q in preds if q.ok and q.shift_coords is not None])
            t0 = time.perf_counter()
            whole = check_coords(pr.model, u)
            t_check = time.perf_counter() - t0
            rate = float(np.mean([check_coords(pr.model, u[rng.choice(len(u), min(args.n, len(u)), replace=False)])
                                  .shifted for _ in range(args.batches)]))
            syn[kind] = {"fire_rate": rate, "all_115": whole.shifted,
                         "statistics_all": {x["name"]: [x["statistic"], x["threshold"]] for x in whole.sites},
                         "predict_ms_per_image": 1000 * t_pred / len(imgs),
                         "check_ms_per_image": 1000 * t_check / len(u)}
            C.log(f"shipped model, BUSI test images, {kind}: fires on {100 * rate:.1f} % of batches of {args.n}; "
                  f"all {len(u)}: {whole.shifted} ({syn[kind]['statistics_all']})")
        pooled = np.random.default_rng(2).normal(size=(args.n, 1280)).astype(np.float32)
        t0 = time.perf_counter()
        for _ in range(100):
            image_coords(pr.model, pooled)
        syn["coords_ms_per_image"] = 1000 * (time.perf_counter() - t0) / (100 * args.n)
        out["synthetic_shifts_shipped_model"] = syn
    head["loadavg_end"] = C.loadavg()
    print(f"load average start {head['loadavg_start']} end {head['loadavg_end']}")
    C.log(f"wrote {write(C.RESULTS / 'shift_study.json', {**head, 'caches': [args.busi, args.site], **out})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
