"""Leave-one-site-out (LOSO) study: which recipe generalises to a site it never saw.

    python benchmarks/loso_study.py [--busi CACHE] [--busi-v2 CACHE] [--site CACHE] [--site-v2 CACHE]
        [--plain-seeds 3]

Two sites: BUSI and BUS-BRA-dev. For every candidate recipe, benign-vs-malignant AUC of
p(malignant) when trained on one site and tested on the other:
  BUSI -> dev   train on every BUSI image outside a mixed-label duplicate group (the images
                io.data.split excludes), normal included; test on all BUS-BRA-dev images;
  dev -> BUSI   train on all BUS-BRA-dev images (benign/malignant mapped by name into BUSI's
                classes); test on BUSI's benign + malignant images outside mixed-label groups.
LOSO mean = mean of the two. Whole image: the config's head on the raw view (averaged with
the mirror when the config flips). Box head: heads.box.BoxHead trained as training.box does
(jittered mask boxes + mirrors) on the training site's lesion images, tested with the true
mask box ``box`` (averaged with ``box_flip`` when the config flips; ``box_s20``, a 20 %
sloppy box, reported beside it); its preprocessing is the config's.

Selection rule (fixed before the first run, issue 17): candidates whose whole-image LOSO mean
is within 0.01 of the best are tied; among those, candidates whose box LOSO mean is within
0.01 of the best of them stay tied; the simplest of these wins (fewer parameters, v1 before
v2, no flip before flip, no masks before masks). Plain (MLP) heads depend on their seed:
their AUCs are means over ``--plain-seeds`` seeds. Writes benchmarks/results/loso_study.json
and prints the table (with the load average).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TIE = 0.01
CANDIDATES = ("model-7+logreg", "model-7+logreg+flip", "model-7+logreg+v2", "model-7+logreg+v2+flip",
              "model-7p+logreg", "model-7p+logreg+flip", "model-7p+logreg+v2+flip", "model-7", "model-7p")
SHIPPED_BEFORE = "model-7p+logreg+flip"  # weights/busi_lite_default.json at the start of the study


def usable_rows(cache) -> np.ndarray:
    """Rows outside mixed-label duplicate groups (what io.data.split keeps out of train and test)."""
    from busi_lite.io import data as D
    mixed = set(D.mixed_label_groups(cache.groups, cache.labels))
    return np.array([i for i, g in enumerate(cache.groups) if g not in mixed], np.int64)


def lesion(cache, rows) -> np.ndarray:
    names = list(cache.classes)
    return rows[np.isin(cache.labels[rows], [names.index("benign"), names.index("malignant")])]


def is_malignant(cache, rows) -> np.ndarray:
    return cache.labels[rows] == list(cache.classes).index("malignant")


def whole_auc(train, tr_rows, test, te_rows, cfg, seed) -> float:
    from busi_lite.evaluation import metrics as M
    from busi_lite.training.core import predict_rows, train_head
    head, _ = train_head(train, tr_rows, cfg, seed)
    p = predict_rows(head, test, te_rows, cfg).proba[:, list(train.classes).index("malignant")]
    return float(M.roc_auc(is_malignant(test, te_rows), p))


def box_auc(train, tr_rows, test, te_rows, flip) -> dict:
    from busi_lite.evaluation import metrics as M
    from busi_lite.training.box import box_scores, fit_box_head
    head = fit_box_head(train, tr_rows)
    y = is_malignant(test, te_rows)
    return {"box": float(M.roc_auc(y, box_scores(head, test, te_rows, "box", flip))),
            "box_s20": float(M.roc_auc(y, box_scores(head, test, te_rows, "box_s20", False)))}


N_FEATURES = 1280  # the shipped backbone's pooled feature width


def n_params(cfg, n_classes=3) -> int:
    if cfg.head == "logreg":
        return N_FEATURES * n_classes + n_classes + 1
    h = cfg.params.hidden
    return N_FEATURES * h + h + h * n_classes + n_classes


def complexity(cfg) -> tuple:
    return (n_params(cfg), cfg.preprocess != "v1", cfg.flip, cfg.masks)


def choose(rows: list[dict]) -> tuple[str, list[str]]:
    """The selection rule of the module docstring -> (winner, names tied at each stage)."""
    best_w = max(r["whole_mean"] for r in rows)
    tied = [r for r in rows if r["whole_mean"] >= best_w - TIE]
    best_b = max(r["box_mean"] for r in tied)
    tied = [r for r in tied if r["box_mean"] >= best_b - TIE]
    tied.sort(key=lambda r: tuple(r["complexity"]))
    return tied[0]["name"], [r["name"] for r in tied]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busi", default="cache/busi_features.h5")
    p.add_argument("--busi-v2", default="cache/busi_features_v2.h5")
    p.add_argument("--site", default="cache/busbra-dev_features.h5")
    p.add_argument("--site-v2", default="cache/busbra-dev_features_v2.h5")
    p.add_argument("--plain-seeds", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    args = p.parse_args(argv)

    from busi_lite.common.jsonio import write
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import grid_for_heads
    from busi_lite.training.core import with_classes

    head = C.header()
    grid = {c.name: c for c in grid_for_heads("plain,logreg", "v1,v2", (False, True))}
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]
    pps = {grid[n].preprocess for n in names}
    busi = {pp: FeatureCache(args.busi if pp == "v1" else args.busi_v2) for pp in pps}
    site = {pp: FeatureCache(args.site if pp == "v1" else args.site_v2) for pp in pps}
    box_memo, out = {}, []
    for name in names:
        cfg = grid[name]
        b, s = busi[cfg.preprocess], with_classes(site[cfg.preprocess], busi[cfg.preprocess].classes)
        b_rows, s_rows = usable_rows(b), np.arange(len(s))
        b_les = lesion(b, b_rows)
        t0 = time.perf_counter()
        seeds = range(args.plain_seeds) if cfg.head == "plain" else range(1)
        b2s = float(np.mean([whole_auc(b, b_rows, s, s_rows, cfg, sd) for sd in seeds]))
        s2b = float(np.mean([whole_auc(s, s_rows, b, b_les, cfg, sd) for sd in seeds]))
        key = (cfg.preprocess, cfg.flip)
        if key not in box_memo:
            box_memo[key] = (box_auc(b, b_rows, s, s_rows, cfg.flip), box_auc(s, s_rows, b, b_les, cfg.flip))
        bb2s, bs2b = box_memo[key]
        r = {"name": name, "config": cfg.to_json(), "n_params": n_params(cfg), "complexity": list(complexity(cfg)),
             "whole_busi_to_dev": b2s, "whole_dev_to_busi": s2b, "whole_mean": (b2s + s2b) / 2,
             "box_busi_to_dev": bb2s["box"], "box_dev_to_busi": bs2b["box"], "box_mean": (bb2s["box"] + bs2b["box"]) / 2,
             "box_s20_mean": (bb2s["box_s20"] + bs2b["box_s20"]) / 2, "seeds": len(seeds),
             "n": {"busi_train": len(b_rows), "busi_test_lesion": len(b_les), "dev": len(s_rows)},
             "seconds": time.perf_counter() - t0}
        out.append(r)
        C.log(f"{name}: whole {b2s:.3f}/{s2b:.3f} -> {r['whole_mean']:.3f}; box {bb2s['box']:.3f}/{bs2b['box']:.3f}"
              f" -> {r['box_mean']:.3f} ({r['seconds']:.0f}s)")
    winner, tied = choose(out)
    rows = [[r["name"], f"{r['n_params']:,}", f"{r['whole_busi_to_dev']:.3f}", f"{r['whole_dev_to_busi']:.3f}",
             f"{r['whole_mean']:.3f}", f"{r['box_busi_to_dev']:.3f}", f"{r['box_dev_to_busi']:.3f}",
             f"{r['box_mean']:.3f}", f"{r['box_s20_mean']:.3f}"] for r in out]
    print(C.table(rows, ["candidate", "params", "whole BUSI->dev", "whole dev->BUSI", "whole LOSO mean",
                         "box BUSI->dev", "box dev->BUSI", "box LOSO mean", "box s20 mean"]))
    print(f"chosen (rule: whole mean within {TIE} tied, then box mean within {TIE}, then simplest): {winner}"
          f"  (tied: {', '.join(tied)})")
    head["loadavg_end"] = C.loadavg()
    print(f"load average start {head['loadavg_start']} end {head['loadavg_end']}")
    path = write(C.RESULTS / ("loso_study.json" if not args.only else "loso_study_partial.json"),
                 {**head, "caches": vars(args), "rule": __doc__.split("Selection rule")[1].split("Writes")[0].strip(),
                  "shipped_before": SHIPPED_BEFORE, "results": out, "chosen": winner, "tied": tied})
    C.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
