"""Site training study: heads trained on BUS-BRA-dev alone or with BUSI (issue 11.4, second bullet).

    python benchmarks/site_training_study.py [--k 5] [--seed 0] [--busi-v1 C] [--busi-v2 C]
        [--site-v1 C] [--site-v2 C]

With busi_lite.training.site.site_cv (group-aware 5-fold over the site's images, each image
predicted once out of fold; AUC malignant vs benign with a stratified bootstrap 95 % interval,
2000 resamples; recall/FAR at argmax):

  site alone               train on the other site folds only (a 2-class head)
  BUSI + 200 site cases    BUSI split-0 training images + at most 200 site images of the
                           training folds (stratified), per-site balanced weights
  BUSI + all site cases    the same with every site image of the training folds

for the configs model-7+logreg (v1), model-7+logreg+v2+flip and the default model-7p (v1).
The mixed rows also give the BUSI split-0 test AUC of a head trained on BUSI training + the
(capped) site images. Records the machine load. Writes benchmarks/results/site_training.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CONFIGS = ("model-7+logreg", "model-7+logreg+v2+flip", "model-7p")
MODES = (("site alone", False, None), ("BUSI + 200 site cases", True, 200), ("BUSI + all site cases", True, None))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--busi-v1", default="cache/busi_features.h5")
    p.add_argument("--busi-v2", default="cache/busi_features_v2.h5")
    p.add_argument("--site-v1", default="cache/busbra-dev_features_all.h5")
    p.add_argument("--site-v2", default="cache/busbra-dev_features_all_v2.h5")
    args = p.parse_args(argv)

    from busi_lite.common.jsonio import write
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import grid_for_heads
    from busi_lite.training.site import site_cv

    head = C.header()
    cfgs = {c.name: c for c in grid_for_heads("plain,logreg", "v1,v2", (False, True)) if c.name in CONFIGS}
    busi = {"v1": FeatureCache(args.busi_v1), "v2": FeatureCache(args.busi_v2)}
    site = {"v1": FeatureCache(args.site_v1), "v2": FeatureCache(args.site_v2)}
    rows, out = [], []
    for name in CONFIGS:
        cfg = cfgs[name]
        for mode, with_busi, cases in MODES:
            t0 = time.perf_counter()
            r = site_cv(site[cfg.preprocess], cfg, args.k, args.seed, busi=busi[cfg.preprocess] if with_busi else None,
                        busi_seed=args.seed, site_cases=cases)
            d = dict(r.to_json(), mode_label=mode, seconds=time.perf_counter() - t0)
            out.append(d)
            C.log(f"{name} {mode}: AUC {r.auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}] ({d['seconds']:.0f}s)")
            rows.append([name, mode, f"{r.auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}]", f"{r.recall:.2f}/{r.far:.2f}",
                         f"{r.n_train_mean:.0f}", "-" if r.busi_test_auc is None else f"{r.busi_test_auc:.3f}"])
    print(C.table(rows, ["config", "training", f"BUS-BRA-dev {args.k}-fold AUC [bootstrap]", "recall/FAR argmax",
                         "train images/fold", "BUSI test AUC (split 0)"]))
    head["loadavg_end"] = C.loadavg()
    print(f"load average start {head['loadavg_start']} end {head['loadavg_end']}")
    path = write(C.RESULTS / "site_training.json", {**head, "caches": vars(args), "results": out})
    C.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
