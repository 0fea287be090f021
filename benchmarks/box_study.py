"""Lesion-box study (issue 11, section 3): what does a box drawn around the lesion buy, and what
does a sloppy box cost?  Also: the latency of flip averaging and of box mode, and what the
lesion map's proposed box is worth.

    python benchmarks/box_study.py [--busi-cache C] [--site-cache C] [--seeds 5] [--C 0.01]
        [--backbone B] [--image IMG] [--reps 40] [--no-timing] [--no-proposed] [--out box_study]
        [--timing-only | --proposed-only]   (measure that part again into an existing result)

Caches: BUSI and BUS-BRA-dev caches extracted WITH the flip and box views, e.g.

    busi-lite extract --data ../shared/datasets/busi --out cache/busi_features.h5 \\
        --views flip,box,box_flip,box_j0,box_j1,box_j0_flip,box_j1_flip,box_s10,box_s20,box_s30
    (same for ../shared/datasets/busbra-dev -> cache/busbra-dev_features_all.h5; --preprocess v2 for v2)

Protocol, fixed before running (all benign vs malignant, on images WITH a lesion):
- BUSI internal: seeds 0..S-1, the group-aware 85/15 split each seed gives (cache.split, as
  sweep does). Trained on the TRAINING lesion images only:
    whole-image only : the same L2 logistic regression (C) on the whole image's pooled features
                       (raw + its mirror as training samples; test score = mean of the two);
    box mode         : busi_lite.training.box.fit_box_head (jittered boxes box_j0/j1 + mirrors);
                       tested with the TRUE mask box (box, averaged with box_flip = what serving
                       does), the true box without the mirror, and sloppy boxes box_s10/s20/s30
                       (jitter 10/20/30 % of shift and scale, no mirror).
  Metrics per seed: AUC, recall at FAR <= 0.10, FAR at recall >= 0.95; mean and t 95 % interval.
- BUS-BRA-dev zero-shot: the heads trained on ALL BUSI lesion images (no BUS-BRA image is ever
  used to train or choose anything), scored on every BUS-BRA-dev image; AUC with a stratified
  bootstrap 95 % interval (2000 resamples, seed 0). BUS-BRA's true boxes come from its masks.
- Timing: warm per-image latency (p50, p90 over --reps single-image calls after 3 warm-up
  calls, the conditions interleaved so they meet the same load, after waiting up to
  --quiet-wait s for a quiet machine; whether it was quiet is recorded) of Predictor.predict_arrays on one BUSI image: the model as it is (v1, no flip), with
  flip averaging, and with a lesion box (box head with and without its mirror); also the
  process CPU time per call (all threads), which a busy machine inflates less than wall time.
- Proposed box: an MTL head (lesion map) trained on BUSI seed 0's training images (its raw
  view, lr 1e-4, batch 32, 50 epochs, lam 1); IoU of its proposed box (lesion_bbox) with the
  true mask box on BUSI seed-0 test lesion images and on every BUS-BRA-dev image, and the box
  mode's AUC when that proposal is used uncorrected (no proposal: the centre crop) against the
  true box, with the same box head (BUSI seed 0 training lesion images, no mirror).
Targets (issue 11): box mode AUC >= 0.94 on BUSI, >= 0.79 zero-shot on BUS-BRA-dev; warm p50
<= 20 ms with flip averaging, <= 30 ms with a box.
Writes benchmarks/results/<out>.json (with the machine's load before and after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from busi_lite.evaluation import metrics as M
from busi_lite.features.cache import FeatureCache
from busi_lite.features.views import EVAL_BOX_VIEWS
from busi_lite.heads.box import BoxHead
from busi_lite.training.core import cache_inputs
from busi_lite.io import data as D
from busi_lite.io.imread import read_rgb
from busi_lite.training.box import box_y, fit_box_head, lesion_rows

FAR_CAP, RECALL = 0.10, 0.95
# backbone inputs per image: whole (+ mirror) (+ lesion crop (+ its mirror)); the box head's
# mirrored pair needs the whole image's mirror even when the main head does not flip
PASSES = {"v1_no_flip": 1, "v1_flip_averaging": 2, "box_mode_with_mirror": 4, "box_mode_no_mirror": 2}


def scores3(y, s) -> dict:
    """AUC, recall at FAR <= FAR_CAP, FAR at recall >= RECALL of scores s for y (1 = malignant)."""
    y = np.asarray(y, bool)
    fpr, tpr, _ = M.roc_curve(y, s)
    ok = fpr <= FAR_CAP
    return {"auc": float(M.roc_auc(y, s)), "recall_at_far10": float(tpr[ok].max()) if ok.any() else 0.0,
            "far_at_recall95": float(fpr[tpr >= RECALL].min())}


def whole_head(fc, rows, Cval) -> BoxHead:
    rows = np.asarray(rows)
    X = np.concatenate([fc.pooled("raw", rows), fc.pooled("flip", rows)])
    y = np.tile(box_y(fc, rows), 2)
    head = BoxHead(X.shape[1], Cval)
    head.fit(X, y, sample_weight=np.full(len(y), 0.5))
    return head


def conditions(fc, rows, box: BoxHead, whole: BoxHead) -> dict:
    """{condition: p(malignant) [n]} of lesion ``rows``."""
    p = lambda h, v: h.predict_proba(cache_inputs(BoxHead, fc, v, rows))[:, 1]  # noqa: E731
    out = {"whole_image_only": (whole.predict_proba(fc.pooled("raw", rows))[:, 1]
                                + whole.predict_proba(fc.pooled("flip", rows))[:, 1]) / 2,
           "box_true": (p(box, "box") + p(box, "box_flip")) / 2,
           "box_true_no_mirror": p(box, "box")}
    for v in EVAL_BOX_VIEWS:
        if v in fc.views:
            out[f"{v}_no_mirror"] = p(box, v)
    return out


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for cond in per_seed[0]:
        out[cond] = {}
        for k in per_seed[0][cond]:
            vals = [r[cond][k] for r in per_seed]
            mean, lo, hi = M.mean_ci(vals)
            out[cond][k] = {"mean": mean, "lo": lo, "hi": hi, "per_seed": vals}
    return out


def busi_internal(fc, seeds, Cval) -> dict:
    per_seed = []
    for seed in seeds:
        sp = fc.split(seed, 0.15)
        tr, te = lesion_rows(fc, sp.train), lesion_rows(fc, sp.test)
        box, whole = fit_box_head(fc, tr, Cval), whole_head(fc, tr, Cval)
        y = box_y(fc, te)
        per_seed.append({c: scores3(y, s) for c, s in conditions(fc, te, box, whole).items()})
        C.log(f"BUSI seed {seed}: n_train {len(tr)}, n_test {len(te)}: "
              + ", ".join(f"{c} {r['auc']:.3f}" for c, r in per_seed[-1].items()))
    return {"seeds": list(seeds), "summary": summarise(per_seed)}


def zero_shot(fc, site, Cval) -> dict:
    tr = lesion_rows(fc, np.arange(len(fc)))
    box, whole = fit_box_head(fc, tr, Cval), whole_head(fc, tr, Cval)
    rows = lesion_rows(site, np.arange(len(site)))
    y = box_y(site, rows)
    out = {"n_train_busi": int(len(tr)), "n_site": int(len(rows)), "n_site_malignant": int(y.sum()), "conditions": {}}
    for c, s in conditions(site, rows, box, whole).items():
        r = scores3(y, s)
        r["auc_lo"], r["auc_hi"] = M.bootstrap_auc_interval(y == 1, s, 2000, 0)
        out["conditions"][c] = r
        C.log(f"BUS-BRA-dev zero-shot {c}: AUC {r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}], "
              f"recall@FAR<=0.1 {r['recall_at_far10']:.3f}, FAR@recall0.95 {r['far_at_recall95']:.3f}")
    return out


# ---------------------------------------------------------------- proposed box (lesion map)

def _true_box(root: Path, rel: str, size) -> tuple | None:
    from busi_lite.features.preprocess import mask_box

    ds_sample = next((s for s in _samples(root) if s.path == rel), None)
    m = D.read_mask(root, ds_sample, size) if ds_sample is not None else None
    return None if m is None else mask_box(m)


_SAMPLES = {}


def _samples(root: Path):
    if root not in _SAMPLES:
        ds = D.discover(root)
        _SAMPLES[root] = ds.samples
    return _SAMPLES[root]


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _crop_pooled(bb, pp, root: Path, rels, boxes) -> np.ndarray:
    """Pooled backbone features [n,1280] of each image's lesion crop (box + margin, resized)."""
    out = []
    for i in range(0, len(rels), 16):
        x = np.stack([pp(read_rgb(root / r), box=b) for r, b in zip(rels[i:i + 16], boxes[i:i + 16])])
        out.append(bb.features(x).reshape(len(x), -1, 1280).mean(axis=1))
    return np.concatenate(out)


def proposed_box_iou(fc, site, backbone, Cval) -> dict:
    """IoU of the MTL lesion map's proposed box with the true mask box, and box-mode AUC when the
    proposed box is used UNCORRECTED (no proposal -> the centre crop) against the true box, with
    the same box head (trained on BUSI seed 0's training lesion images, no mirror)."""
    from busi_lite.features.backbone import Backbone, center_box
    from busi_lite.features.preprocess import Preprocessing
    from busi_lite.model.config import Config
    from busi_lite.serving.geometry import lesion_geometry
    from busi_lite.training.core import train_head

    sp = fc.split(0, 0.15)
    box_head = fit_box_head(fc, lesion_rows(fc, sp.train), Cval)
    bb, pp = Backbone(backbone), Preprocessing(fc.preprocess_version)
    cfg = Config.build(name="model-7+mtl", head="mtl", lr=1e-4, batch=32, epochs=50)
    t0 = time.perf_counter()
    head, _ = train_head(fc, sp.train, cfg, 0)
    C.log(f"mtl head trained in {time.perf_counter() - t0:.1f}s")
    out = {}
    for name, cache, rows in (("busi_seed0_test", fc, lesion_rows(fc, sp.test)),
                              ("busbra_dev", site, lesion_rows(site, np.arange(len(site))))):
        root = Path(cache.attrs["dataset_root"])
        width, height = _index(cache, "width"), _index(cache, "height")
        lesion = head.predict(cache.spatial("raw", rows)).lesion
        ious, none, used = [], 0, []
        for k, r in enumerate(rows):
            w, h = int(width[r]), int(height[r])
            _, prop = lesion_geometry(lesion[k].reshape(7, 7), w, h)
            true = _true_box(root, cache.paths[r], (w, h))
            if prop is not None and (prop[2] - prop[0] < 2 or prop[3] - prop[1] < 2):
                prop = None   # too thin to crop: serving does not propose it either (inference.MIN_BOX)
            used.append(tuple(prop) if prop is not None else center_box(w, h))
            if true is None:
                continue
            if prop is None:
                none += 1
                ious.append(0.0)
                continue
            ious.append(_iou(prop, true))
        crop = _crop_pooled(bb, pp, root, [cache.paths[r] for r in rows], used)
        y = box_y(cache, rows)
        p_prop = box_head.predict_proba(BoxHead.feature_inputs(cache.pooled("raw", rows), crop))[:, 1]
        p_true = box_head.predict_proba(cache_inputs(BoxHead, cache, "box", rows))[:, 1]
        out[name] = {"n": len(ious), "mean_iou": float(np.mean(ious)), "median_iou": float(np.median(ious)),
                     "share_iou_ge_0.5": float(np.mean(np.asarray(ious) >= 0.5)), "no_box_proposed": none,
                     "box_mode_with_proposed_box": scores3(y, p_prop), "box_mode_with_true_box": scores3(y, p_true)}
        C.log(f"proposed box {name}: IoU mean {out[name]['mean_iou']:.3f}, median {out[name]['median_iou']:.3f}, "
              f"IoU>=0.5 {out[name]['share_iou_ge_0.5']:.2f} (n {len(ious)}, no box {none}); box-mode AUC "
              f"proposed {out[name]['box_mode_with_proposed_box']['auc']:.3f} vs true "
              f"{out[name]['box_mode_with_true_box']['auc']:.3f}")
    return out


def _index(cache, key):
    return cache._f[f"index/{key}"][:]


# ---------------------------------------------------------------- timing

def timing(backbone, image: Path, busi_cache: Path, reps: int) -> dict:
    from busi_lite.features.backbone import Backbone
    from busi_lite.model.model import Model
    from busi_lite.serving.inference import Predictor
    from busi_lite.training.box import add_box_head

    base = Model.load()
    with FeatureCache(busi_cache) as fc:
        boxed = add_box_head(base, fc, folds=5, flip=True)
        auto = add_box_head(base, fc, folds=5).card.box   # what train-box's default (--mirror auto) chooses
    flip = Model(base.head, replace(base.card, config=replace(base.card.config, flip=True)), base.ood)
    no_mirror = Model(boxed.head, replace(boxed.card, box=replace(boxed.card.box, flip=False)), boxed.ood,
                      boxed.box_head)
    rgb = read_rgb(image)
    h, w = rgb.shape[:2]
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    out = {"image": str(image), "size": [w, h], "box": list(box), "reps": reps,
           "default_model_auto_mirror": {"flip": auto.flip, "oof_auc_mirror": auto.oof_auc_mirror,
                                         "oof_auc_no_mirror": auto.oof_auc_no_mirror}}
    bb = Backbone(backbone)   # ONE session for all: several sessions' idle-spinning threads would slow each other
    runs = {name: (Predictor(model, bb), boxes)
            for name, model, boxes in (("v1_no_flip", base, None), ("v1_flip_averaging", flip, None),
                                       ("box_mode_with_mirror", boxed, [box]), ("box_mode_no_mirror", no_mirror, [box]))}
    for pr, boxes in runs.values():
        for _ in range(3):
            pr.predict_arrays([rgb], boxes=boxes)
    out["quiet"] = C.wait_quiet()
    out["loadavg_before"] = C.loadavg()
    ms, cpu = {n: [] for n in runs}, {n: [] for n in runs}
    for _ in range(reps):  # interleaved: every condition meets the same load
        for name, (pr, boxes) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            pr.predict_arrays([rgb], boxes=boxes)
            ms[name].append(1000 * (time.perf_counter() - t0))
            cpu[name].append(1000 * (time.process_time() - c0))
    out["loadavg_after"] = C.loadavg()
    out["busy_cores_after"] = round(C.busy_cores(), 2)
    for name in runs:
        t = sorted(ms[name])
        out[name] = {"p50_ms": statistics.median(t), "p90_ms": t[int(0.9 * (len(t) - 1))],
                     "cpu_p50_ms": statistics.median(cpu[name]), "backbone_passes": PASSES[name]}
        C.log(f"timing {name}: p50 {out[name]['p50_ms']:.1f} ms, p90 {out[name]['p90_ms']:.1f} ms, "
              f"CPU p50 {out[name]['cpu_p50_ms']:.1f} ms")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--busi-cache", type=Path, default=Path("cache/busi_features.h5"))  # all views
    p.add_argument("--site-cache", type=Path, default=Path("cache/busbra-dev_features_all.h5"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--C", dest="Cval", type=float, default=0.01)
    p.add_argument("--backbone", type=Path, default=C.DEFAULT_BACKBONE)
    p.add_argument("--image", type=Path, default=C.DEFAULT_DATA / "malignant" / "malignant (5).png")
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--no-timing", action="store_true")
    C.add_quiet_args(p)
    p.add_argument("--no-proposed", action="store_true")
    p.add_argument("--out", default="box_study")
    p.add_argument("--timing-only", action="store_true",
                   help="Measure the timing again and replace it in an existing results/<out>.json.")
    p.add_argument("--proposed-only", action="store_true",
                   help="Measure the proposed box again and replace it in an existing results/<out>.json.")
    args = p.parse_args(argv)
    C.configure(args)
    if args.proposed_only:
        import json

        path = C.RESULTS / f"{args.out}.json"
        res = json.loads(path.read_text())
        res["proposed_box_iou"] = proposed_box_iou(FeatureCache(args.busi_cache), FeatureCache(args.site_cache),
                                                   args.backbone, args.Cval)
        res["proposed_box_iou"]["command"] = C.header(argv)["command"]
        print(f"wrote {C.write_results(args.out, res)}")
        return 0
    if args.timing_only:
        import json

        path = C.RESULTS / f"{args.out}.json"
        res = json.loads(path.read_text())
        res["timing"] = timing(args.backbone, args.image, args.busi_cache, args.reps)
        res["timing"]["command"] = C.header(argv)["command"]
        res["targets"]["flip_p50_ms<=20"] = C.target(res["timing"]["v1_flip_averaging"]["p50_ms"], 20)
        res["targets"]["box_p50_ms<=30"] = C.target(res["timing"]["box_mode_with_mirror"]["p50_ms"], 30)
        print(f"wrote {C.write_results(args.out, res)}")
        return 0
    res = C.header(argv if argv is None else [sys.argv[0]] + list(argv))
    fc, site = FeatureCache(args.busi_cache), FeatureCache(args.site_cache)
    res.update(preprocess=fc.preprocess_version, C=args.Cval, busi_cache=str(args.busi_cache),
               site_cache=str(args.site_cache))
    if site.preprocess_version != fc.preprocess_version or site.backbone_sha256 != fc.backbone_sha256:
        raise SystemExit("the two caches differ in preprocessing or backbone")
    t0 = time.perf_counter()
    res["busi_internal"] = busi_internal(fc, range(args.seeds), args.Cval)
    res["busbra_dev_zero_shot"] = zero_shot(fc, site, args.Cval)
    if not args.no_proposed:
        res["proposed_box_iou"] = proposed_box_iou(fc, site, args.backbone, args.Cval)
    res["study_seconds"] = time.perf_counter() - t0
    if not args.no_timing:
        res["timing"] = timing(args.backbone, args.image, args.busi_cache, args.reps)
    s, z = res["busi_internal"]["summary"], res["busbra_dev_zero_shot"]["conditions"]
    res["targets"] = {"box_auc_busi>=0.94": C.target(s["box_true"]["auc"]["mean"], 0.94, ">="),
                      "box_auc_busbra_dev>=0.79": C.target(z["box_true"]["auc"], 0.79, ">=")}
    if "timing" in res:
        res["targets"]["flip_p50_ms<=20"] = C.target(res["timing"]["v1_flip_averaging"]["p50_ms"], 20)
        res["targets"]["box_p50_ms<=30"] = C.target(res["timing"]["box_mode_with_mirror"]["p50_ms"], 30)
    rows = [[c, f"{v['auc']['mean']:.3f} [{v['auc']['lo']:.3f}, {v['auc']['hi']:.3f}]",
             f"{v['recall_at_far10']['mean']:.3f}", f"{v['far_at_recall95']['mean']:.3f}",
             f"{z[c]['auc']:.3f} [{z[c]['auc_lo']:.3f}, {z[c]['auc_hi']:.3f}]", f"{z[c]['recall_at_far10']:.3f}",
             f"{z[c]['far_at_recall95']:.3f}"] for c, v in s.items()]
    print(C.table(rows, ["condition", "BUSI AUC (5 seeds)", "rec@FAR<=.1", "FAR@rec.95", "BUS-BRA-dev AUC",
                         "rec@FAR<=.1", "FAR@rec.95"]))
    for k, t in res["targets"].items():
        print(" ".join(C.fmt_target(k, t)))
    print(f"wrote {C.write_results(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
