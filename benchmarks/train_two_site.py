"""Train the shipped two-site model: the LOSO-chosen recipe on BUSI + all of BUS-BRA-dev.

    python benchmarks/train_two_site.py [--config model-7p+logreg+flip] [--out weights/busi_lite_default]
        [--busi CACHE] [--site CACHE] [--seed 0] [--splits 5] [--no-save]

The recipe is the one benchmarks/loso_study.py chose (benchmarks/results/loso_study.json).
Model: the whole-image head trained on BUSI split ``seed``'s training images (its 15 % test
split stays held out for the card's test figures) + ALL BUS-BRA-dev images, each site's
sample weights scaled to the same total (training.site.fit_on); thresholds and the OOD
threshold calibrated on out-of-fold predictions over both sites (group-aware 5-fold inside
each site; every fold's head trains on the other folds of both); OOD statistics on both
sites' training images. Box head: trained the same way on both sites' lesion images
(jittered mask boxes + mirrors), mirrored pair averaged at prediction when the recipe flips,
threshold for recall 0.95 out of fold over both sites (jittered box box_j0). Site-shift
statistics of both sites in the card (training.shift). BUS-BRA-dev figures of this model are
NOT zero-shot (it trained on all of it).

Also measures (``--splits N``): BUSI malignant AUC (vs rest, held-out test split) over N
group-aware splits of this recipe trained on BUSI + all BUS-BRA-dev, beside the same recipe
trained on BUSI alone (today's shipped model: 0.927). Writes benchmarks/results/two_site.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BUSI_NAME, SITE_NAME = "BUSI", "BUS-BRA-dev"
NOTE = ("trained on BUSI and on all of BUS-BRA-dev (Gomez-Flores et al., Medical Physics 2024, "
        "doi:10.1002/mp.16812): its BUS-BRA-dev figures are not zero-shot")


def folds_of(cache, rows, k, seed):
    from busi_lite.io import data as D
    rows = np.asarray(rows)
    return D.group_kfold(cache.labels[rows], cache.groups[rows], [cache.paths[i] for i in rows], k, seed)


def sources_of(busi, site, sp, b_rows, s_rows, test_pred, threshold, box_auc):
    """The card's ``sources``: BUSI (its split-0 test images held out, figures on them) and
    BUS-BRA-dev (all images trained on: no held-out figures)."""
    from busi_lite.model.card import SourceInfo
    from busi_lite.training.core import auc_interval
    from busi_lite.training.sources import files_digest
    mal = list(busi.classes).index("malignant")
    y = test_pred.y == mal
    auc, lo, hi = auc_interval(y, test_pred.proba[:, mal])
    alert = test_pred.proba[:, mal] >= threshold
    nan = float("nan")
    return [SourceInfo(name=BUSI_NAME, kind="folder", location=str(busi.attrs.get("dataset_root", busi.path)),
                       counts={c: int((busi.labels == i).sum()) for i, c in enumerate(busi.classes)},
                       files_digest=files_digest(busi), split_digest=sp.digest(busi.paths), n_train=int(len(b_rows)),
                       n_test=int(len(sp.test)), weight=0.5, test_auc=auc, test_auc_lo=lo, test_auc_hi=hi,
                       test_recall=float(alert[y].mean()), test_far=float(alert[~y].mean()), box_test_auc=box_auc),
            SourceInfo(name=SITE_NAME, kind="folder", location=str(site.attrs.get("dataset_root", site.path)),
                       counts={c: int((site.labels == list(site.classes).index(c)).sum())
                               for c in getattr(site, "source_classes", site.classes)},
                       files_digest=files_digest(site), split_digest="all images trained on", n_train=int(len(s_rows)),
                       n_test=0, weight=0.5, test_auc=nan, test_auc_lo=nan, test_auc_hi=nan, test_recall=nan,
                       test_far=nan)]


def two_site_model(busi, site, cfg, seed=0, folds=5, target_recall=0.95, log=print):
    """The model described in the module docstring -> Model."""
    from busi_lite.common.constants import VERSION
    from busi_lite.evaluation import metrics as M
    from busi_lite.heads.box import DEFAULT_C
    from busi_lite.model.card import ModelCard, OODInfo, TestMetrics, TestPredictions
    from busi_lite.model.model import OOD, Model
    from busi_lite.model.records import SplitInfo
    from busi_lite.training.box import box_test_auc, calibrate_box, lesion_rows
    from busi_lite.training.core import calibrate, chance_warnings, evaluate_rows, predict_rows, training_rows
    from busi_lite.training.shift import add_shift, cache_site
    from busi_lite.training.site import fit_on

    t0 = time.perf_counter()
    classes = tuple(busi.classes)
    sp = busi.split(seed, 0.15)
    b_rows, s_rows = training_rows(busi, sp.train, cfg, seed), np.arange(len(site))
    head, hist = fit_on([(busi, b_rows), (site, s_rows)], cfg, classes, seed, True)
    hist["n_train"] = int(len(b_rows) + len(s_rows))
    t_train = time.perf_counter() - t0
    log(f"trained {cfg.name} on {len(b_rows)} BUSI + {len(s_rows)} BUS-BRA-dev images in {t_train:.1f}s")

    fb, fs = folds_of(busi, b_rows, folds, seed), folds_of(site, s_rows, folds, seed)
    proba, ood_s = np.zeros((len(b_rows) + len(s_rows), len(classes))), np.zeros(len(b_rows) + len(s_rows))
    for f in range(folds):
        trb, teb, trs, tes = b_rows[fb != f], b_rows[fb == f], s_rows[fs != f], s_rows[fs == f]
        h, _ = fit_on([(busi, trb), (site, trs)], cfg, classes, seed + 1000 * (f + 1), True)
        o = OOD.fit(np.concatenate([busi.pooled("raw", trb), site.pooled("raw", trs)]))
        ib, is_ = np.nonzero(fb == f)[0], len(b_rows) + np.nonzero(fs == f)[0]
        proba[ib], proba[is_] = predict_rows(h, busi, teb, cfg).proba, predict_rows(h, site, tes, cfg).proba
        ood_s[ib], ood_s[is_] = o.score(busi.pooled("raw", teb)), o.score(site.pooled("raw", tes))
    oof = {"proba": proba, "lesion": None, "ood": ood_s,
           "y": np.concatenate([busi.labels[b_rows], site.labels[s_rows]])}
    warnings = chance_warnings(oof) + [NOTE]
    cal = calibrate(oof, target_recall)
    mal = classes.index("malignant")
    oof_auc = float(M.roc_auc(oof["y"][oof["y"] != 0] == mal, proba[oof["y"] != 0, mal]))
    log(f"OOF over both sites: benign-vs-malignant AUC {oof_auc:.3f}; malignant threshold "
        f"{cal.malignant_threshold:.3f} (recall {target_recall}), OOD threshold {cal.ood_threshold:.2f}")
    ood = OOD.fit(np.concatenate([busi.pooled("raw", b_rows), site.pooled("raw", s_rows)]))
    ood.threshold = cal.ood_threshold
    test_pred = predict_rows(head, busi, sp.test, cfg)
    card = ModelCard(
        config=cfg, classes=list(classes), backbone_sha256=busi.backbone_sha256,
        backbone_file=busi.attrs.get("backbone_file"), preprocess_version=busi.preprocess_version,
        feature_shape=busi.spec.feature_shape, package_version=VERSION, backbone=busi.spec,
        split=SplitInfo(seed=seed, test_fraction=0.15, digest=sp.digest(busi.paths),
                        n_train_images=int(len(b_rows) + len(s_rows)), n_test=int(len(sp.test)),
                        excluded=[busi.paths[i] for i in sp.excluded]),
        calibration=cal, metrics=TestMetrics(evaluate_rows(head, busi, sp.test, cfg, pred=test_pred),
                                             evaluate_rows(head, busi, sp.test, cfg, cal.malignant_threshold,
                                                           pred=test_pred)),
        test_predictions=TestPredictions([busi.paths[i] for i in sp.test], test_pred.y, np.round(test_pred.proba, 5)),
        history=hist, train_seconds=t_train, total_seconds=0.0, head=head.config(),
        ood=OODInfo(ood.resid_var, ood.threshold), warnings=warnings)

    # box head over both sites: training.box.calibrate_box (as train --box), mirror as the recipe flips
    lb, ls = lesion_rows(busi, b_rows), lesion_rows(site, s_rows)
    box = calibrate_box([(busi, lb), (site, ls)], seed, folds, DEFAULT_C, target_recall, flip=bool(cfg.flip))
    lt = lesion_rows(busi, sp.test)
    test_auc = box_test_auc(box.head, [(busi, lt)], box.flip)
    log(f"box head: OOF AUC {box.oof_auc:.3f} over both sites, threshold {box.threshold:.3f}; BUSI test AUC " +
        ", ".join(f"{k} {v:.3f}" for k, v in test_auc.items()))
    info, box_head = box.info(test_auc, len(lt)), box.head
    model = Model(head, replace(card, box=info, sources=sources_of(busi, site, sp, b_rows, s_rows, test_pred,
                                                                   cal.malignant_threshold, test_auc["box"])),
                  ood, box_head)
    model = add_shift(model, [cache_site(BUSI_NAME, busi, b_rows), cache_site(SITE_NAME, site, s_rows)], seed)
    for s in model.card.shift.sites:
        log(f"shift statistics {s.name}: {s.n} images, threshold {s.threshold:.1f} "
            f"(held-out batches above it: {s.false_alarm_rate:.3f})")
    model.card.total_seconds = time.perf_counter() - t0
    return model


def busi_splits(busi, site, cfg, n, log):
    """BUSI test malignant AUC (vs rest) per split seed, trained with and without BUS-BRA-dev."""
    from busi_lite.evaluation import metrics as M
    from busi_lite.training.core import predict_rows, training_rows
    from busi_lite.training.site import fit_on
    out = {"busi+dev": [], "busi": []}
    mal = list(busi.classes).index("malignant")
    for s in range(n):
        sp = busi.split(s, 0.15)
        rows = training_rows(busi, sp.train, cfg, s)
        y = busi.labels[sp.test] == mal
        for key, parts in (("busi+dev", [(busi, rows), (site, np.arange(len(site)))]), ("busi", [(busi, rows)])):
            h, _ = fit_on(parts, cfg, tuple(busi.classes), s, True)
            out[key].append(float(M.roc_auc(y, predict_rows(h, busi, sp.test, cfg).proba[:, mal])))
        log(f"split {s}: BUSI test AUC {out['busi+dev'][-1]:.3f} (BUSI + BUS-BRA-dev), {out['busi'][-1]:.3f} (BUSI alone)")
    return {k: {"per_split": v, "mean_ci": list(M.mean_ci(v))} for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="model-7p+logreg+flip", help="the LOSO study's choice")
    p.add_argument("--busi", default="cache/busi_features.h5")
    p.add_argument("--site", default="cache/busbra-dev_features.h5")
    p.add_argument("--out", default=str(C.REPO / "weights" / "busi_lite_default"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)

    from busi_lite.common.jsonio import write
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import grid_for_heads
    from busi_lite.training.core import with_classes

    head = C.header()
    cfg = {c.name: c for c in grid_for_heads("plain,logreg", "v1,v2", (False, True))}[args.config]
    busi = FeatureCache(args.busi)
    site = with_classes(FeatureCache(args.site), busi.classes)
    model = two_site_model(busi, site, cfg, args.seed, log=C.log)
    res = {"config": cfg.to_json(), "card_box": model.card.box.to_json(),
           "test_auc_busi_split": model.card.metrics.test_argmax.malignant_auc,
           "shift": [{"name": s.name, "n": s.n, "threshold": s.threshold} for s in model.card.shift.sites]}
    if not args.no_save:
        npz, js = model.save(args.out)
        C.log(f"saved {npz} and {js}")
        res["saved"] = str(js)
    if args.splits:
        res["busi_splits"] = busi_splits(busi, site, cfg, args.splits, C.log)
        for k, v in res["busi_splits"].items():
            m, lo, hi = v["mean_ci"]
            print(f"BUSI AUC over {args.splits} splits, trained on {k}: {m:.3f} [{lo:.3f}, {hi:.3f}]")
    head["loadavg_end"] = C.loadavg()
    print(f"load average start {head['loadavg_start']} end {head['loadavg_end']}")
    C.log(f"wrote {write(C.RESULTS / 'two_site.json', {**head, 'caches': vars(args), **res})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
