"""New-site study: preprocessing v2 + flip averaging and the logreg head, BUSI internal and
BUS-BRA-dev zero-shot, with the project's own code (issue 11, section 2).

    python benchmarks/new_site_study.py [--seeds 5] [--busi-v1 C] [--busi-v2 C]
        [--site-v1 C] [--site-v2 C] [--site-data DIR] [--only NAMES]

Conditions (fixed before running; all the default's model-7p recipe: lr 1e-4, batch 32,
50 epochs, mask-fused views of training images; logreg: C = 0.01 on features / one global std):

  model-7p                 plain head, v1 (the current default config)
  model-7p+logreg          logreg head, v1
  model-7p+v2+flip         plain head, v2, flip averaging
  model-7p+logreg+v2+flip  logreg head, v2, flip averaging
  model-7+logreg, model-7+logreg+v2+flip   the same without mask views (the lab study's setting)
  model-7p+logreg+flip     logreg, v1, flip: what ``select`` chose (benchmarks/results/select_issue11.md);
                           measured afterwards with ``--only model-7p+logreg+flip --out new_site_study_chosen``

For each:
1. BUSI internal: experiments.run_one on group-aware splits seeds 0..N-1 (as ``sweep`` does):
   malignant AUC on each split's test images (flip models: mean of raw and mirror),
   mean with a Student-t 95 % interval over the seeds; recall and FAR at argmax likewise.
2. BUS-BRA-dev zero-shot: experiments.fit_model on split 0 (as ``train`` does: operating point
   from OOF training predictions), then external.evaluate_external on every image of the
   folder's cache of the same preprocessing: AUC with its stratified bootstrap 95 % interval
   (2000 resamples, seed 0), recall/FAR at argmax and at the operating point (Wilson), AUC per
   scanner (dev.csv 'Device').
3. Paired stratified bootstrap (2000 resamples, seed 0, the same resampled images for both)
   of the BUS-BRA-dev AUC gain of v2+flip over v1 for the same head and views, and the paired
   per-seed difference of the internal AUC (Student-t interval).

Caches (extract them first; defaults): cache/busi_features.h5 (v1), cache/busi_features_v2.h5,
cache/busbra-dev_features_all.h5, cache/busbra-dev_features_all_v2.h5, all views.
Records the machine load. Writes benchmarks/results/new_site_study.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

DEFAULT_SITE = C.SHARED / "datasets" / "busbra-dev"
CONDITIONS = ("model-7p", "model-7p+logreg", "model-7p+v2+flip", "model-7p+logreg+v2+flip",
              "model-7+logreg", "model-7+logreg+v2+flip", "model-7p+logreg+flip")
PAIRS = (("model-7p", "model-7p+v2+flip"), ("model-7p+logreg", "model-7p+logreg+v2+flip"),
         ("model-7+logreg", "model-7+logreg+v2+flip"))
N_RESAMPLES = 2000
CITATION = ("Gómez-Flores W, Gregorio-Calas MJ, Coelho de Albuquerque Pereira W. BUS-BRA: A breast ultrasound "
            "dataset for assessing computer-aided diagnosis systems. Medical Physics 2024;51(4):3110-3123. "
            "doi:10.1002/mp.16812")


def configs() -> dict:
    from busi_lite.model.config import grid_for_heads

    grid = grid_for_heads("plain,logreg", "v1,v2", (False, True))
    return {c.name: c for c in grid if c.name in CONDITIONS}


def paired_auc_gain(y, a, b, n=N_RESAMPLES, seed=0) -> dict:
    """AUC(b) - AUC(a) on the same images, stratified bootstrap percentile 95 % interval."""
    from busi_lite.evaluation.metrics import roc_auc

    y = np.asarray(y, bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        gains.append(roc_auc(y[idx], b[idx]) - roc_auc(y[idx], a[idx]))
    g = float(roc_auc(y, b) - roc_auc(y, a))
    lo, hi = np.percentile(gains, [2.5, 97.5])
    return {"gain": g, "lo": float(lo), "hi": float(hi), "share_resamples_gain_le_0": float(np.mean(np.asarray(gains) <= 0)),
            "n_resamples": n, "seed": seed}


def devices(site: Path) -> dict:
    """image file stem -> scanner, from the folder's dev.csv (empty when absent)."""
    f = site / "dev.csv"
    if not f.is_file():
        return {}
    with open(f, newline="") as fh:
        return {r["ID"]: r["Device"] for r in csv.DictReader(fh)}


def per_device_auc(paths, y, p, dev: dict) -> dict:
    from busi_lite.evaluation.metrics import bootstrap_auc_interval, roc_auc

    names = np.array([dev.get(Path(q).stem, "unknown") for q in paths])
    out = {}
    for d in sorted(set(names)):
        m = names == d
        if y[m].all() or not y[m].any():
            continue
        lo, hi = bootstrap_auc_interval(y[m], p[m], N_RESAMPLES, 0)
        out[d] = {"n": int(m.sum()), "n_malignant": int(y[m].sum()), "auc": float(roc_auc(y[m], p[m])),
                  "lo": float(lo), "hi": float(hi)}
    return out


def run_condition(cfg, busi, site, site_dir, seeds, dev) -> tuple[dict, np.ndarray, np.ndarray]:
    from busi_lite.evaluation import metrics as M
    from busi_lite.evaluation.external import MALIGNANT, evaluate_external, predict_cache
    from busi_lite.training.experiments import fit_model, run_one

    t0 = time.perf_counter()
    runs = [run_one(busi, cfg, s) for s in seeds]
    auc = [r.test.malignant_auc for r in runs]
    internal = {"seeds": list(seeds), "auc_per_seed": auc,
                "auc": M.mean_ci(auc), "recall": M.mean_ci([r.test.malignant["recall"] for r in runs]),
                "far": M.mean_ci([r.test.malignant["far"] for r in runs]),
                "n_test": [r.n_test for r in runs], "train_seconds_mean": float(np.mean([r.train_seconds for r in runs]))}
    C.log(f"{cfg.name}: internal AUC {np.mean(auc):.3f} ({time.perf_counter() - t0:.0f}s)")
    model, card = fit_model(busi, cfg, 0)
    ev = evaluate_external(model, site, data_root=site_dir, per_image=False)
    pr = predict_cache(model, site)
    mal = list(model.classes).index(MALIGNANT)
    y, p = pr.y == mal, pr.proba[:, mal]
    ext = {"n": ev.n, "counts": ev.counts, "auc": ev.auc, "lo": ev.auc_lo, "hi": ev.auc_hi,
           "argmax_recall": ev.argmax.recall.to_json(), "argmax_far": ev.argmax.far.to_json(),
           "op_threshold": float(card.calibration.malignant_threshold),
           "op_recall": ev.operating_point.recall.to_json(), "op_far": ev.operating_point.far.to_json(),
           "per_device": per_device_auc(site.paths, y, p, dev)}
    busi_split0 = {"auc": card.metrics.test_argmax.malignant_auc,
                   "recall_op": card.metrics.test_operating_point.malignant["recall"],
                   "far_op": card.metrics.test_operating_point.malignant["far"]}
    C.log(f"{cfg.name}: BUS-BRA-dev AUC {ev.auc:.3f} [{ev.auc_lo:.3f}, {ev.auc_hi:.3f}] "
          f"({time.perf_counter() - t0:.0f}s)")
    return ({"config": cfg.to_json(), "internal": internal, "busi_split0_model": busi_split0, "bus_bra_dev": ext,
             "seconds": time.perf_counter() - t0}, y, p)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--busi-v1", default="cache/busi_features.h5")
    p.add_argument("--busi-v2", default="cache/busi_features_v2.h5")
    p.add_argument("--site-v1", default="cache/busbra-dev_features_all.h5")
    p.add_argument("--site-v2", default="cache/busbra-dev_features_all_v2.h5")
    p.add_argument("--site-data", default=str(DEFAULT_SITE))
    p.add_argument("--only", default="", help="comma list of conditions (default all)")
    p.add_argument("--out", default="new_site_study", help="results file name in benchmarks/results/")
    args = p.parse_args(argv)

    from busi_lite.common.jsonio import write
    from busi_lite.evaluation import metrics as M
    from busi_lite.features.cache import FeatureCache

    head = C.header()
    cfgs = configs()
    only = [n for n in args.only.split(",") if n] or list(CONDITIONS)
    site_dir = Path(args.site_data)
    dev = devices(site_dir)
    busi = {"v1": FeatureCache(args.busi_v1), "v2": FeatureCache(args.busi_v2)}
    site = {"v1": FeatureCache(args.site_v1), "v2": FeatureCache(args.site_v2)}
    seeds = list(range(args.seeds))
    res, scores = {}, {}
    for name in only:
        cfg = cfgs[name]
        res[name], y, sc = run_condition(cfg, busi[cfg.preprocess], site[cfg.preprocess], site_dir, seeds, dev)
        scores[name] = (y, sc)
    pairs = {}
    for a, b in PAIRS:
        if a in scores and b in scores:
            assert np.array_equal(scores[a][0], scores[b][0])
            d = np.subtract(res[b]["internal"]["auc_per_seed"], res[a]["internal"]["auc_per_seed"])
            pairs[f"{b} vs {a}"] = {"bus_bra_dev_auc_gain": paired_auc_gain(scores[a][0], scores[a][1], scores[b][1]),
                                    "internal_auc_gain_per_seed": M.mean_ci(d)}
    head["loadavg_end"] = C.loadavg()
    payload = {**head, "dataset_citation": CITATION, "caches": vars(args), "conditions": res, "pairs": pairs}

    def ci(v):
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    rows = []
    for n, r in res.items():
        e = r["bus_bra_dev"]
        rows.append([n, ci(r["internal"]["auc"]), ci(r["internal"]["recall"]), ci(r["internal"]["far"]),
                     f"{e['auc']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]",
                     f"{e['op_recall']['value']:.2f}/{e['op_far']['value']:.2f}",
                     f"{e['argmax_recall']['value']:.2f}/{e['argmax_far']['value']:.2f}"])
    print(C.table(rows, ["condition", f"BUSI AUC ({len(seeds)} seeds)", "recall (argmax)", "FAR (argmax)",
                         "BUS-BRA-dev AUC [bootstrap]", "BRA rec/FAR op", "BRA rec/FAR argmax"]))
    for k, v in pairs.items():
        g = v["bus_bra_dev_auc_gain"]
        print(f"{k}: BUS-BRA-dev AUC gain {g['gain']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}] (paired bootstrap); "
              f"BUSI internal {ci(v['internal_auc_gain_per_seed'])}")
    devs = sorted({d for r in res.values() for d in r["bus_bra_dev"]["per_device"]})
    print(C.table([[n] + [f"{r['bus_bra_dev']['per_device'].get(d, {}).get('auc', float('nan')):.3f}" for d in devs]
                   for n, r in res.items()], ["BUS-BRA-dev AUC by scanner"] + devs))
    print(f"load average start {head.get('loadavg_start')} end {head['loadavg_end']}")
    out = write(C.RESULTS / (args.out + ".json"), payload)
    C.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
