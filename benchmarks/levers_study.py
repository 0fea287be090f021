"""Levers study: can regularisation, mean+max pooling or per-site standardisation reach the LOSO and site targets?

    OPENBLAS_NUM_THREADS=1 python benchmarks/levers_study.py [--busi C] [--busi-v2 C] [--site C] [--site-v2 C]
        [--seeds 3] [--k 5] [--inner 3] [--boot 1000] [--skip-loso] [--skip-site] [--site-recipes NAMES]

Pre-registration (fixed by the lead before any result of this study was seen; verbatim):

 L1. Regularisation: logistic-regression C in {0.003, 0.01 (today), 0.03, 0.1} for the whole-image head
     and for the box head, on the recipes model-7p+logreg+flip and model-7+logreg+v2+flip.
 L2. Pooling: mean+max pooling of the 7x7 grid (2560 features: the mean (today's pooled) concatenated
     with the per-channel max over cells), whole image and box, same two recipes, C = 0.01. (Only if the
     caches hold grid features for the needed views; if not, say so and skip: no re-extraction.)
 L3. Per-site feature standardisation (unsupervised site adaptation, no labels used): each training
     site's features standardised by that site's own mean/std (computed on its training images); the
     test site's features standardised by the test site's own mean/std computed ONLY on a disjoint half
     of its patients (split the test site's groups/patients in two halves A/B by a fixed seed;
     statistics from A -> score B, from B -> score A; AUC over all test images), whole image and box,
     same two recipes, C = 0.01.
 Selection rule (same as loso_study.py, fixed): whole-image LOSO mean within 0.01 of the best are tied;
 then box within 0.01; simplest wins (today's recipe and C=0.01 are simplest; then L1, then L2, then
 L3). Because L1 selects C on the same LOSO it is reported from, its figure is optimistic: label it so.
 For issue 16's site targets, run the same levers on BUS-BRA-dev 5-fold (group-aware, 3 seeds, as
 site_training_targets.py does): with L1 choose C by an INNER group-aware CV on the training folds
 (nested), so the reported figure is not optimistic; L3 is not applicable within one site (skip); also
 the 100-boxed-case curve point for L1 (nested) and L2.

How this script implements it (written down before the first run):
- LOSO protocol = benchmarks/loso_study.py's (its data rules, training functions, box protocol): BUSI -> dev
  trains on BUSI's usable rows (normal included) and tests on all BUS-BRA-dev images; dev -> BUSI trains on
  all BUS-BRA-dev images and tests on BUSI's usable lesion images; LOSO mean = mean of the two. Whole image:
  training.core.train_head / predict_rows (the product's L-BFGS LogRegHead, flip averaged). Box: training.box
  fit_box_head / box_scores (the product's L-BFGS BoxHead; jittered mask boxes + mirrors; tested with the
  true mask box ``box`` averaged with ``box_flip``). The box head of a candidate uses the candidate's C.
- L2: a cache view whose pooled(view) is [mean (the cache's pooled), per-channel max over the 49 cells of
  /features/<view>] for every view (raw, flip, mask-fused, box); the box head then reads [whole 2560, crop
  2560]. The grid features are read from the caches (read-only), never re-extracted.
- L3: a cache view whose pooled(view) is (x - mean) / sd per channel, with two statistic sets per site:
  "whole" from the ``raw`` view (applied to raw, flip and the mask-fused views) and "crop" from the
  ``box_j0`` view (a jittered, hand-drawn-like box; applied to every box view), sd floored at 1 % of the
  median channel sd. Training site: statistics from its training rows (lesion rows for "crop"). Test site:
  its test rows' groups shuffled by np.random.default_rng(L3_SEED) and halved (A/B); statistics from the
  unlabelled features of A score B and vice versa. Labels are never read for statistics. (The "crop"
  statistics of the OTHER half use its box_j0 crops: in box mode a box is an input the user gives; its
  own half's boxes never enter its statistics.)
- Tie-breaks within a lever (fixed): L1: |log10(C / 0.01)| smaller first, then smaller C; then the recipe
  order of loso_study.complexity (v1 before v2, no masks before masks ...). Lever rank first: today
  (both recipes at C = 0.01) < L1 < L2 < L3.
- Intervals: per direction the Hanley-McNeil 95 % interval of the AUC; for every candidate the paired,
  stratified bootstrap (``--boot`` resamples of the test images, both directions resampled independently)
  95 % interval of its LOSO-mean difference to the same recipe at C = 0.01.
- Site part (BUS-BRA-dev only; figures on its own held-out folds, NOT zero-shot): the folds, caps and
  scoring of training.curve.learning_curve (group-aware k-fold over all images / its box images, fold seeds
  0..seeds-1, cap_rows(n, seed*100+f), training.site.fit_on with per-site balance / box fit_box_parts +
  box_scores with the mirrored pair), AUC only (no thresholds): mean over seeds of the pooled out-of-fold
  AUC, Hanley-McNeil 95 % interval on the images, seed sd, and a paired bootstrap interval of the
  difference to C = 0.01. Rows: today (C = 0.01); L1 at each fixed C (optimistic if one were picked: shown
  for reference only); L1 nested: per outer fold, C chosen by the highest pooled out-of-fold AUC of an
  ``--inner``-fold group-aware CV (fold seed seed*100+f) on that fold's training cases only (ties: closest
  to 0.01), then trained on them; L2 at C = 0.01. Modes: whole image (all cases), box (all cases), box with
  at most 100 site cases a fold.

Writes benchmarks/results/levers_study.json and prints the tables with the load average.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import loso_study as L

RECIPES = ("model-7p+logreg+flip", "model-7+logreg+v2+flip")
CS = (0.003, 0.01, 0.03, 0.1)
TODAY_C = 0.01
LEVER_RANK = {"today": 0, "L1": 1, "L2": 2, "L3": 3}
L3_SEED = 20261204
SD_FLOOR = 0.01  # x the median channel sd
TARGETS = {"loso_whole": 0.79, "loso_box": 0.85, "site_whole": 0.79, "site_box": 0.87, "site_box_100": 0.85}


# ---------------------------------------------------------------- cache views of the levers
class _View:
    """A feature cache seen through a transform of its pooled features; everything else read through."""

    def __init__(self, cache):
        self._cache = cache

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def __len__(self) -> int:
        return len(self._cache)


class MeanMax(_View):
    """pooled(view, rows) -> [n, 2D]: the cache's pooled mean, then the per-channel max over the GxG cells."""

    def __init__(self, cache):
        super().__init__(cache)
        self.spec = replace(cache.spec, n_features=2 * cache.spec.n_features)
        self._max = {}

    def grid_max(self, view) -> np.ndarray:
        """[N, D] float32 per-channel max over the cells of /features/<view>, read in blocks."""
        if view not in self._max:
            import h5py

            self._cache._check_view(view)
            with h5py.File(self._cache.path, "r") as f:
                ds = f[f"features/{view}"]
                out = np.empty((ds.shape[0], ds.shape[-1]), np.float32)
                for i in range(0, ds.shape[0], 64):
                    out[i:i + 64] = ds[i:i + 64].max(axis=(1, 2))
            self._max[view] = out
        return self._max[view]

    def pooled(self, view="raw", rows=None) -> np.ndarray:
        mx = self.grid_max(view)
        return np.concatenate([self._cache.pooled(view, rows), mx if rows is None else mx[np.asarray(rows)]], axis=1)


def stats_of(cache, rows) -> dict:
    """Per-site standardisation statistics from UNLABELLED features of ``rows``:
    {"whole": (mean [D], sd [D]) of raw, "crop": of box_j0 over the rows holding it}."""
    rows = np.asarray(rows, np.int64)
    out = {}
    for kind, view, r in (("whole", "raw", rows), ("crop", "box_j0", rows[cache.valid("box_j0", rows)])):
        x = np.asarray(cache.pooled(view, r), np.float64)
        sd = x.std(axis=0)
        out[kind] = (x.mean(axis=0), np.maximum(sd, SD_FLOOR * float(np.median(sd))))
    return out


class SiteStd(_View):
    """pooled(view, rows) -> per-channel (x - mean) / sd with the "crop" statistics for box views,
    the "whole" statistics for the others."""

    def __init__(self, cache, stats):
        super().__init__(cache)
        self.stats = stats

    def pooled(self, view="raw", rows=None) -> np.ndarray:
        mu, sd = self.stats["crop" if str(view).startswith("box") else "whole"]
        return ((self._cache.pooled(view, rows) - mu) / sd).astype(np.float32)


def halves(cache, rows, seed=L3_SEED) -> np.ndarray:
    """Boolean [n]: True = half A. The rows' groups shuffled (fixed seed) and cut in two."""
    g = np.asarray(cache.groups)[np.asarray(rows)]
    u = np.unique(g)
    a = set(u[np.random.default_rng(seed).permutation(len(u))[:len(u) // 2]].tolist())
    return np.array([x in a for x in g.tolist()])


# ---------------------------------------------------------------- intervals
def hm(auc, y) -> list:
    from busi_lite.training.core import hanley_mcneil
    y = np.asarray(y, bool)
    return list(hanley_mcneil(auc, int(y.sum()), int((~y).sum())))


def boot_idx(y, n, seed) -> list:
    """``n`` stratified resamples of indices of y (positives and negatives drawn separately)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y)[0], np.nonzero(~np.asarray(y, bool))[0]
    return [np.r_[pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]]
            for _ in range(n)]


def paired_diff(y_list, a_list, b_list, idx_list) -> list:
    """95 % percentile interval of mean_j [AUC(a_j) - AUC(b_j)] over resamples; j indexes independent
    test sets (LOSO directions) with their own resamples idx_list[j], or score repeats (seeds) on one
    test set (same resamples)."""
    from busi_lite.evaluation import metrics as M
    d = []
    for b in range(len(idx_list[0])):
        d.append(np.mean([M.roc_auc(y[i[b]], a[i[b]]) - M.roc_auc(y[i[b]], bb[i[b]])
                          for y, a, bb, i in zip(y_list, a_list, b_list, idx_list)]))
    return [float(x) for x in np.percentile(d, [2.5, 97.5])]


# ---------------------------------------------------------------- LOSO
def with_C(cfg, c):
    return replace(cfg, params=type(cfg.params)(C=c), name=f"{cfg.name}@C{c:g}")


def wrap(cache, lever, stats=None, memo=None):
    if lever == "L2":
        return memo.setdefault(id(cache), MeanMax(cache))
    if lever == "L3":
        return SiteStd(cache, stats)
    return cache


def loso_direction(train, tr_rows, test, te_rows, cfg, lever, box_C, mm, classes):
    """One LOSO direction -> (whole scores [n], box scores [n]) of te_rows (p(malignant))."""
    from busi_lite.training.box import box_scores, fit_box_head
    from busi_lite.training.core import predict_rows, train_head, with_classes

    tr = with_classes(wrap(train, lever, stats_of(train, tr_rows) if lever == "L3" else None, mm), classes)
    if lever == "L3":
        a = halves(test, te_rows)
        tests = [(with_classes(SiteStd(test, stats_of(test, te_rows[a])), classes), ~a),  # A's stats score B
                 (with_classes(SiteStd(test, stats_of(test, te_rows[~a])), classes), a)]
    else:
        tests = [(with_classes(wrap(test, lever, None, mm), classes), np.ones(len(te_rows), bool))]
    mal = list(classes).index("malignant")
    head, _ = train_head(tr, tr_rows, cfg, 0)
    bhead = fit_box_head(tr, tr_rows, box_C)
    whole, box = np.zeros(len(te_rows)), np.zeros(len(te_rows))
    for te, sel in tests:
        whole[sel] = predict_rows(head, te, te_rows[sel], cfg).proba[:, mal]
        box[sel] = box_scores(bhead, te, te_rows[sel], "box", cfg.flip)
    return whole, box


def run_loso(args, log) -> dict:
    from busi_lite.evaluation import metrics as M
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import grid_for_heads

    grid = {c.name: c for c in grid_for_heads("logreg", "v1,v2", (False, True))}
    busi = {"v1": FeatureCache(args.busi), "v2": FeatureCache(args.busi_v2)}
    site = {"v1": FeatureCache(args.site), "v2": FeatureCache(args.site_v2)}
    cands = [(r, "today", TODAY_C) for r in RECIPES] + [(r, "L1", c) for r in RECIPES for c in CS if c != TODAY_C] \
        + [(r, "L2", TODAY_C) for r in RECIPES] + [(r, "L3", TODAY_C) for r in RECIPES]
    mm, out, scores = {}, [], {}
    for recipe, lever, c in cands:
        t0 = time.perf_counter()
        cfg = with_C(grid[recipe], c)
        b, s = busi[cfg.preprocess], site[cfg.preprocess]
        classes = b.classes
        b_rows, s_rows = L.usable_rows(b), np.arange(len(s))
        b_les = L.lesion(b, b_rows)
        y_dev = L.is_malignant(s, s_rows)
        y_busi = L.is_malignant(b, b_les)
        w1, x1 = loso_direction(b, b_rows, s, s_rows, cfg, lever, c, mm, classes)
        w2, x2 = loso_direction(s, s_rows, b, b_les, cfg, lever, c, mm, classes)
        n = {"busi_train": len(b_rows), "busi_test_lesion": len(b_les), "dev": len(s_rows),
             "l3_halves_seed": L3_SEED}
        scores[(recipe, lever, c)] = {"y": (y_dev, y_busi), "whole": (w1, w2), "box": (x1, x2)}
        r = {"recipe": recipe, "lever": lever, "C": c, "name": f"{recipe} {lever}" + (f" C={c:g}" if lever == "L1" else "")}
        for mode, (p1, p2) in (("whole", (w1, w2)), ("box", (x1, x2))):
            a1, a2 = float(M.roc_auc(y_dev, p1)), float(M.roc_auc(y_busi, p2))
            r.update({f"{mode}_busi_to_dev": a1, f"{mode}_busi_to_dev_ci": hm(a1, y_dev),
                      f"{mode}_dev_to_busi": a2, f"{mode}_dev_to_busi_ci": hm(a2, y_busi),
                      f"{mode}_mean": (a1 + a2) / 2})
        r["complexity"] = [LEVER_RANK[lever], abs(math.log10(c / TODAY_C)), c, *L.complexity(grid[recipe])]
        r["seconds"] = time.perf_counter() - t0
        r["optimistic"] = lever == "L1"
        out.append(r)
        log(f"LOSO {r['name']}: whole {r['whole_busi_to_dev']:.3f}/{r['whole_dev_to_busi']:.3f} -> "
            f"{r['whole_mean']:.3f}; box {r['box_busi_to_dev']:.3f}/{r['box_dev_to_busi']:.3f} -> {r['box_mean']:.3f}"
            f" ({r['seconds']:.0f}s)")
    idx = None
    for r in out:  # paired bootstrap of the difference to the same recipe at C = 0.01
        base, me = scores[(r["recipe"], "today", TODAY_C)], scores[(r["recipe"], r["lever"], r["C"])]
        if idx is None:
            idx = [boot_idx(y, args.boot, 100 + j) for j, y in enumerate(base["y"])]
        for mode in ("whole", "box"):
            r[f"{mode}_diff"] = r[f"{mode}_mean"] - next(q for q in out if q["recipe"] == r["recipe"]
                                                          and q["lever"] == "today")[f"{mode}_mean"]
            r[f"{mode}_diff_ci"] = [0.0, 0.0] if r["lever"] == "today" else \
                paired_diff(base["y"], me[mode], base[mode], idx)
    winner, tied = L.choose(out)
    for cc in list(busi.values()) + list(site.values()):
        cc.close()
    return {"results": out, "chosen": winner, "tied": tied, "n": n}


# ---------------------------------------------------------------- site (issue 16)
SITE_MODES = (("whole", None), ("box", None), ("box", 100))


def fit_score(mode, cfg, c, cache, tr, te, classes, seed) -> np.ndarray:
    """Train on site rows ``tr`` as training.curve does, p(malignant) of ``te``."""
    from busi_lite.training.box import box_scores, fit_box_parts
    from busi_lite.training.core import predict_rows
    from busi_lite.training.site import fit_on

    if mode == "box":
        return box_scores(fit_box_parts([(cache, tr)], True, c), cache, te, "box", True)
    head, _ = fit_on([(cache, tr)], with_C(cfg, c), classes, seed, True)
    return predict_rows(head, cache, te, cfg).proba[:, list(classes).index("malignant")]


def nested_C(mode, cfg, cache, tr, classes, inner, seed, y_of) -> tuple[float, dict]:
    """C with the highest pooled out-of-fold AUC of an ``inner``-fold group-aware CV inside ``tr`` only."""
    from busi_lite.evaluation import metrics as M
    from busi_lite.io import data as D

    fold = D.group_kfold(cache.labels[tr], cache.groups[tr], [cache.paths[i] for i in tr], inner, seed)
    auc = {}
    for c in CS:
        s = np.zeros(len(tr))
        for f in range(inner):
            if (fold == f).any() and (fold != f).any():
                s[fold == f] = fit_score(mode, cfg, c, cache, tr[fold != f], tr[fold == f], classes, seed + 17 * f)
        auc[c] = float(M.roc_auc(y_of(tr), s))
    best = max(auc.values())
    return min((c for c in CS if auc[c] == best), key=lambda c: (abs(math.log10(c / TODAY_C)), c)), auc


def run_site(args, log) -> dict:
    from busi_lite.evaluation import metrics as M
    from busi_lite.features.cache import FeatureCache
    from busi_lite.io import data as D
    from busi_lite.model.config import grid_for_heads
    from busi_lite.training.box import lesion_rows
    from busi_lite.training.site import cap_rows
    from busi_lite.training.sources import model_classes

    grid = {c.name: c for c in grid_for_heads("logreg", "v1,v2", (False, True))}
    recipes = [r for r in args.site_recipes.split(",") if r]
    caches = {"v1": FeatureCache(args.site), "v2": FeatureCache(args.site_v2)}
    mm, out = {}, []
    seeds = tuple(range(args.seeds))
    for recipe in recipes:
        cfg = grid[recipe]
        site = caches[cfg.preprocess]
        classes = model_classes([site])
        mal = site.classes.index("malignant")

        def y_of(r, site=site, mal=mal):
            return site.labels[np.asarray(r)] == mal

        for mode, cap in SITE_MODES:
            t0 = time.perf_counter()
            rows_all = lesion_rows(site, np.arange(len(site))) if mode == "box" else np.arange(len(site))
            variants = [("today", c) for c in (TODAY_C,)] + [("L1", c) for c in CS if c != TODAY_C] \
                + [("L1 nested", None), ("L2", TODAY_C)]
            sc = {v: [] for v in variants}
            chosen, used = [], []
            for seed in seeds:
                fold = D.group_kfold(site.labels[rows_all], site.groups[rows_all],
                                     [site.paths[i] for i in rows_all], args.k, seed)
                per = {v: np.zeros(len(rows_all)) for v in variants}
                for f in range(args.k):
                    te = rows_all[fold == f]
                    tr = cap_rows(site, rows_all[fold != f], cap, seed * 100 + f)
                    used.append(len(tr))
                    fs = seed * 100 + f
                    byc = {c: fit_score(mode, cfg, c, site, tr, te, classes, fs) for c in CS}
                    for c in CS:
                        per[("today", c) if c == TODAY_C else ("L1", c)][fold == f] = byc[c]
                    c_star, inner_auc = nested_C(mode, cfg, site, tr, classes, args.inner, fs, y_of)
                    chosen.append({"seed": seed, "fold": f, "C": c_star, "inner_auc": inner_auc})
                    per[("L1 nested", None)][fold == f] = byc[c_star]
                    per[("L2", TODAY_C)][fold == f] = fit_score(mode, cfg, TODAY_C, wrap(site, "L2", memo=mm),
                                                                tr, te, classes, fs)
                for v in variants:
                    sc[v].append(per[v])
            y = y_of(rows_all)
            idx = boot_idx(y, args.boot, 200)
            for lever, c in variants:
                aucs = [float(M.roc_auc(y, s)) for s in sc[(lever, c)]]
                auc = float(np.mean(aucs))
                r = {"recipe": recipe, "mode": mode, "site_cases": round(float(np.mean(used))),
                     "requested": cap, "lever": lever, "C": c, "n_images": len(y), "n_malignant": int(y.sum()),
                     "auc": auc, "auc_ci": hm(auc, y), "auc_seed_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1
                     else float("nan"), "seed_aucs": aucs,
                     "optimistic": lever == "L1",
                     "diff": auc - float(np.mean([M.roc_auc(y, s) for s in sc[("today", TODAY_C)]])),
                     "diff_ci": [0.0, 0.0] if lever == "today" else
                     paired_diff([y] * len(seeds), sc[(lever, c)], sc[("today", TODAY_C)], [idx] * len(seeds))}
                if lever == "L1 nested":
                    r["chosen_C"] = {f"{c:g}": sum(q["C"] == c for q in chosen) for c in CS}
                out.append(r)
            log(f"site {recipe} {mode} {'all' if cap is None else cap}: " + ", ".join(
                f"{lever_label(q)} {q['auc']:.3f}"
                for q in out if q["recipe"] == recipe and q["mode"] == mode and q["requested"] == cap)
                + f" ({time.perf_counter() - t0:.0f}s)")
    for cc in caches.values():
        cc.close()
    return {"results": out, "seeds": list(seeds), "k": args.k, "inner": args.inner}


# ---------------------------------------------------------------- main
def lever_label(r) -> str:
    return r["lever"] + (f" C={r['C']:g}" if r["lever"] == "L1" else "")


def _ci(x) -> str:
    return f"[{x[0]:+.3f}, {x[1]:+.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Pre-registration, protocol and tie-breaks: see the module docstring "
                                       "(python -c 'import benchmarks.levers_study as m; help(m)' or read the file).")
    p.add_argument("--busi", default="/work/cache/busi_features.h5", help="BUSI cache, preprocessing v1")
    p.add_argument("--busi-v2", default="/work/cache/busi_features_v2.h5", help="BUSI cache, preprocessing v2")
    p.add_argument("--site", default="/work/cache/busbra-dev_features.h5", help="BUS-BRA-dev cache, v1")
    p.add_argument("--site-v2", default="/work/cache/busbra-dev_features_v2.h5", help="BUS-BRA-dev cache, v2")
    p.add_argument("--seeds", type=int, default=3, help="site part: fold seeds 0..N-1 (default 3)")
    p.add_argument("--k", type=int, default=5, help="site part: outer group-aware folds (default 5)")
    p.add_argument("--inner", type=int, default=3, help="site part: inner folds choosing C for L1 nested (default 3)")
    p.add_argument("--boot", type=int, default=1000, help="paired bootstrap resamples for the difference intervals")
    p.add_argument("--site-recipes", default=",".join(RECIPES), help="site part: comma-separated recipes")
    p.add_argument("--skip-loso", action="store_true", help="skip the leave-one-site-out part (issue 17)")
    p.add_argument("--skip-site", action="store_true", help="skip the BUS-BRA-dev 5-fold part (issue 16)")
    p.add_argument("--out", default="levers_study", help="results file stem in benchmarks/results/")
    args = p.parse_args(argv)

    head = C.header()
    out = {**head, "caches": {k: getattr(args, k) for k in ("busi", "busi_v2", "site", "site_v2")},
           "preregistration": __doc__.split("Pre-registration")[1].split("How this script")[0].strip(),
           "targets": TARGETS}
    t_all = time.perf_counter()
    if not args.skip_loso:
        lo = run_loso(args, C.log)
        out["loso"] = lo
        rows = [[r["name"], f"{r['whole_busi_to_dev']:.3f}", f"{r['whole_dev_to_busi']:.3f}", f"{r['whole_mean']:.3f}",
                 _ci(r["whole_diff_ci"]) if r["lever"] != "today" else "-", f"{r['box_busi_to_dev']:.3f}",
                 f"{r['box_dev_to_busi']:.3f}", f"{r['box_mean']:.3f}",
                 _ci(r["box_diff_ci"]) if r["lever"] != "today" else "-"] for r in lo["results"]]
        print("LOSO benign-vs-malignant AUC (L1 rows: C chosen on this same LOSO -> optimistic)")
        print(C.table(rows, ["candidate", "whole BUSI->dev", "whole dev->BUSI", "whole mean", "diff 95 %",
                             "box BUSI->dev", "box dev->BUSI", "box mean", "diff 95 %"]))
        print(f"chosen (whole mean within 0.01 tied, then box mean within 0.01, then simplest): {lo['chosen']}"
              f"  (tied: {', '.join(lo['tied'])})")
        best_w = max(r["whole_mean"] for r in lo["results"])
        best_b = max(r["box_mean"] for r in lo["results"])
        out["loso_targets"] = {"whole_best": C.target(best_w, TARGETS["loso_whole"], ">="),
                               "box_best": C.target(best_b, TARGETS["loso_box"], ">=")}
    if not args.skip_site:
        si = run_site(args, C.log)
        out["site"] = si
        rows = []
        for r in si["results"]:
            lev = lever_label(r)
            if r["lever"] == "L1 nested":
                lev += " (" + ", ".join(f"{k}:{v}" for k, v in r["chosen_C"].items() if v) + ")"
            rows.append([r["recipe"], r["mode"], "all" if r["requested"] is None else r["site_cases"], lev,
                         f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]", f"{r['auc_seed_sd']:.3f}",
                         "-" if r["lever"] == "today" else f"{r['diff']:+.3f} {_ci(r['diff_ci'])}"])
        print("BUS-BRA-dev group-aware 5-fold, mean of seeds (NOT zero-shot: trained on this site's other folds;"
              " L1 at a fixed C: for reference, optimistic if picked)")
        print(C.table(rows, ["recipe", "mode", "site cases", "lever", "AUC [95 %]", "seed sd", "diff to C=0.01 [95 %]"]))
    out["seconds"] = time.perf_counter() - t_all
    out["loadavg_end"] = C.loadavg()
    print(f"total {out['seconds']:.0f} s; load average start {head['loadavg_start']} end {out['loadavg_end']}")
    path = C.write_results(args.out, out)
    C.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
