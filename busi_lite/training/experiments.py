"""Experiments: one run, sweeps over seeds (with resume), calibrated models, model selection.

A run = (config, split seed, training fraction): split the cache's images
(group-aware, 85/15), build the training set (views of TRAINING images only,
optional undersampling), train the head, evaluate on the test images' raw view.
Results are records (busi_lite.model.records / busi_lite.model.card): RunResult, SweepResult,
ModelCard, SelectionRow. The building blocks live in busi_lite.training.core.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from busi_lite.common.atomic import write_text
from busi_lite.common.constants import VERSION as __version__
from busi_lite.common.errors import BusiError
from busi_lite.common.jsonio import jsonable
from busi_lite.common.paper import paper_figures
from busi_lite.evaluation import metrics as M
from busi_lite.features.cache import FeatureCache
from busi_lite.model.card import ModelCard, OODInfo, TestMetrics, TestPredictions
from busi_lite.model.config import Config
from busi_lite.model.model import OOD, Model
from busi_lite.model.records import (
    Interval,
    RecordError,
    RunResult,
    SelectionResult,
    SelectionRow,
    SplitInfo,
    SummaryRow,
    SweepResult,
    check_split,
)
from busi_lite.training.core import (
    calibrate,
    chance_warnings,
    evaluate_rows,
    make_head,
    ood_warning,
    out_of_fold,
    predict_rows,
    recall_at_far,
    split_for,
    train_head,
    training_rows,
)
from busi_lite.training.shift import add_shift, cache_site, site_name


def run_one(cache: FeatureCache, config: Config, seed: int, fraction: float = 1.0,
            test_fraction: float = 0.15) -> RunResult:
    """Train ``config`` on split ``seed`` and evaluate on its test images."""
    t0 = time.perf_counter()
    sp = split_for(cache, seed, test_fraction)
    rows = training_rows(cache, sp.train, config, seed, fraction)
    head, hist = train_head(cache, rows, config, seed, val_rows=sp.test)
    seconds = time.perf_counter() - t0
    res = evaluate_rows(head, cache, sp.test, config)
    return RunResult(config=config, seed=seed, fraction=fraction, split=sp.digest(cache.paths),
                     n_train_images=len(rows), n_train_samples=hist["n_train"], n_test=len(sp.test),
                     n_excluded=len(sp.excluded), train_seconds=seconds, test=res, history=hist,
                     test_fraction=test_fraction)


# ---------------------------------------------------------------- sweeps

def _seg(r: RunResult, key: str) -> float:
    return r.test.segmentation[key] if r.test.segmentation is not None else float("nan")


KEY_METRICS = {
    "malignant_recall": lambda r: r.test.malignant["recall"],
    "malignant_mar": lambda r: r.test.malignant["mar"],
    "malignant_far": lambda r: r.test.malignant["far"],
    "malignant_precision": lambda r: r.test.malignant["precision"],
    "malignant_auc": lambda r: r.test.malignant_auc,
    "accuracy": lambda r: r.test.accuracy,
    "macro_f1": lambda r: r.test.macro_f1,
    "test_loss": lambda r: r.test.log_loss,
    "dice": lambda r: _seg(r, "dice"),
    "train_seconds": lambda r: r.train_seconds,
}


def aggregate(results: list[RunResult]) -> list[SummaryRow]:
    """Group runs by (config name, fraction): mean and 95 % interval of each key metric."""
    groups = {}
    for r in results:
        groups.setdefault((r.config.name, r.fraction), []).append(r)
    rows = []
    for (name, frac), rs in groups.items():
        metrics = {key: Interval(*M.mean_ci([get(r) for r in rs])) for key, get in KEY_METRICS.items()}
        rows.append(SummaryRow(name=name, fraction=frac, seeds=[r.seed for r in rs], config=rs[0].config,
                               metrics=metrics, paper=paper_figures(rs[0].config.base)))
    return rows


def sweep(cache: FeatureCache, configs, seeds, fractions=(1.0,), log=None, done=None, on_run=None,
          test_fraction: float = 0.15) -> SweepResult:
    """Every config x fraction x seed. ``done``: runs of an earlier, interrupted sweep on the same
    cache (see resume_runs) that are kept instead of rerun, only when made with this
    ``test_fraction`` on the very split this cache gives for their seed (split digest), so a
    resumed sweep never averages runs of different test sets; ``on_run(results)`` after each run."""
    configs = list(configs)
    if not configs:
        raise BusiError("no configurations to sweep", "choose at least one config")
    wanted = {(c.name, f, s) for c in configs for f in fractions for s in seeds}
    done = [r if isinstance(r, RunResult) else RunResult.from_json(r) for r in done or []]
    digests = {s: split_for(cache, s, test_fraction).digest(cache.paths) for s in {r.seed for r in done}}
    results = [r for r in done if r.key in wanted and r.test_fraction == test_fraction and r.split == digests[r.seed]]
    have = {r.key for r in results}
    for config in configs:
        for frac in fractions:
            for seed in seeds:
                if (config.name, frac, seed) in have:
                    continue
                r = run_one(cache, config, seed, frac, test_fraction)
                results.append(r)
                if on_run:
                    on_run(results)
                if log:
                    m = r.test.malignant
                    log(f"{config.name:14s} frac={frac:<4} seed={seed}  recall={m['recall']:.3f} "
                        f"far={m['far']:.3f} auc={r.test.malignant_auc:.3f} ({r.train_seconds:.1f}s)")
    return SweepResult(results=results, summary=aggregate(results), cache=str(cache.path),
                       backbone_sha256=cache.backbone_sha256, package_version=__version__)


def cache_digest(cache: FeatureCache) -> str:
    """SHA-256 of what a cache's features are a function of: backbone, preprocessing, views and every
    image's path, label and decoded pixels (index/content_sha256). Another extraction of other
    pixels or with another preprocessing at the same path gives another digest."""
    h = hashlib.sha256()
    for part in (cache.backbone_sha256, cache.preprocess_version, ",".join(cache.views)):
        h.update(str(part).encode() + b"\0")
    for p, lab, c in zip(cache.paths, cache.labels.tolist(), cache.content_sha256):
        h.update(f"{p}\0{lab}\0{c}\n".encode())
    return h.hexdigest()


def partial_json(results, cache: FeatureCache) -> dict:
    """The progress file of an unfinished sweep: its runs so far and the cache they came from."""
    return {"results": jsonable(list(results)), "cache": str(cache.path), "backbone_sha256": cache.backbone_sha256,
            "cache_digest": cache_digest(cache)}


def save_partial(path, results, cache: FeatureCache) -> Path:
    """Write partial_json atomically (call it as sweep's on_run)."""
    return write_text(path, json.dumps(partial_json(results, cache), indent=1))


def resume_runs(partial, cache: FeatureCache, log=None) -> list[RunResult]:
    """Runs of an interrupted sweep (``partial``: the progress file's path or its parsed JSON) that
    may be kept: the same cache path, backbone and content (:func:`cache_digest`), and each run's split digest equal to the split
    this cache gives for its seed (check_split). Anything else is dropped (and said via ``log``)."""
    log = log or (lambda m: None)
    if not isinstance(partial, dict):
        path = Path(partial)
        if not path.is_file():
            return []
        try:
            partial = json.loads(path.read_text())
        except (ValueError, OSError) as e:
            log(f"ignoring {path}: not readable ({e})")
            return []
    if not isinstance(partial, dict) or not isinstance(partial.get("results"), list):
        log("ignoring the progress file: no list of results")
        return []
    if partial.get("backbone_sha256") != cache.backbone_sha256 or partial.get("cache") != str(cache.path):
        log("ignoring the progress file: it comes from another cache or backbone")
        return []
    if partial.get("cache_digest") != cache_digest(cache):
        log("ignoring the progress file: its runs were made on other features (the cache's content changed)")
        return []
    kept, splits = [], {}
    for i, d in enumerate(partial["results"]):
        try:
            r = RunResult.from_json(d, f"results[{i}]")
        except RecordError as e:
            log(f"dropping a saved run: {e}")
            continue
        key = (r.seed, r.test_fraction)
        if key not in splits:
            splits[key] = check_split(cache, r.seed, r.test_fraction, None).digest(cache.paths)
        if splits[key] != r.split:
            log(f"dropping saved run {r.config.name} seed {r.seed}: split {r.split} != {splits[key]} on this cache")
            continue
        kept.append(r)
    return kept


# ---------------------------------------------------------------- calibrated model

def fit_model(cache: FeatureCache, config: Config, seed: int = 0, test_fraction: float = 0.15,
              folds: int = 5, target_recall: float = 0.95, log=None, box: bool = False) -> tuple[Model, ModelCard]:
    """Train ``config`` on split ``seed``'s training images, calibrate thresholds on
    out-of-fold training predictions, fit OOD statistics, evaluate once on the test images.
    A diverging fit raises heads.TrainingError (nothing is returned to save). An out-of-fold
    malignant AUC at chance (training.chance_warnings) is logged and listed in card.warnings.
    ``box``: also add the lesion-box head, trained on the same split's training lesion images
    (busi_lite.training.box.add_box_head; the cache needs the box views). Returns (model, its card)."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    sp = split_for(cache, seed, test_fraction)
    rows = training_rows(cache, sp.train, config, seed)
    head, hist = train_head(cache, rows, config, seed, val_rows=sp.test)
    t_train = time.perf_counter() - t0
    log(f"trained {config.name} on {hist['n_train']} samples ({len(rows)} images) in {t_train:.1f}s")
    oof = out_of_fold(cache, rows, config, seed, folds)
    warnings = chance_warnings(oof)
    for w in warnings:
        log(f"WARNING: {config.name}: {w}")
    cal = calibrate(oof, target_recall)
    ood = OOD.fit(cache.pooled("raw", rows))
    ood.threshold = cal.ood_threshold
    caveat = ood_warning(ood, len(rows))
    if caveat:
        warnings.append(caveat)
        log(f"WARNING: {config.name}: {caveat}")
    test_pred = predict_rows(head, cache, sp.test, config)
    test_argmax = evaluate_rows(head, cache, sp.test, config, pred=test_pred)
    test_op = evaluate_rows(head, cache, sp.test, config, malignant_threshold=cal.malignant_threshold,
                            pred=test_pred)
    card = ModelCard(
        config=config, classes=list(cache.classes), backbone_sha256=cache.backbone_sha256,
        backbone_file=cache.attrs.get("backbone_file"), preprocess_version=cache.preprocess_version,
        feature_shape=cache.spec.feature_shape, package_version=__version__,
        split=SplitInfo(seed=seed, test_fraction=test_fraction, digest=sp.digest(cache.paths),
                        n_train_images=len(rows), n_test=len(sp.test),
                        excluded=[cache.paths[i] for i in sp.excluded]),
        calibration=cal, metrics=TestMetrics(test_argmax, test_op),
        test_predictions=TestPredictions([cache.paths[i] for i in sp.test], test_pred.y,
                                         np.round(test_pred.proba, 5)),
        history=hist, train_seconds=t_train, total_seconds=time.perf_counter() - t0,
        head=head.config(), ood=OODInfo(ood.resid_var, ood.threshold), warnings=warnings or None,
        backbone=cache.spec)
    model = add_shift(Model(head, card, ood), [cache_site(site_name(cache), cache, rows)], seed)
    if box:
        from busi_lite.training.box import add_box_head

        model = add_box_head(model, cache, folds=folds, target_recall=target_recall, log=log)
    return model, model.card


# ---------------------------------------------------------------- model selection

SELECTION_MARGIN = 0.01  # OOF recall within this of the best = tied (about 2 of BUSI's ~180 training malignant images)


def complexity(config: Config, n_classes: int) -> tuple:
    """Sort key, simplest first: trainable parameters, then masks off before on, then fewer views,
    then no flip averaging (one backbone pass), then preprocessing v1 (the paper's) before v2."""
    n_params = int(sum(p.size for p in make_head(config, n_classes, 0).params.values()))
    return (n_params, bool(config.masks), len(config.views) if config.masks else 0, bool(config.flip),
            config.preprocess != "v1")


def rank(rows: list[SelectionRow], configs: dict, n_classes: int,
         margin: float = SELECTION_MARGIN) -> tuple[list[SelectionRow], list[str]]:
    """Best first by a rule fixed in advance: candidates whose OOF recall@FAR is within ``margin``
    of the best are tied; among them the simpler one wins (complexity), then OOF AUC, then name.
    The others follow by recall, AUC, name. Returns (ranking, names of the tied, best first)."""
    if not rows:
        return [], []
    best = max(r.oof_recall_at_far for r in rows)
    tied = [r for r in rows if r.oof_recall_at_far >= best - margin - 1e-12]
    rest = [r for r in rows if all(r is not t for t in tied)]
    tied.sort(key=lambda r: (complexity(configs[r.name], n_classes), -r.oof_auc, r.name))
    rest.sort(key=lambda r: (-r.oof_recall_at_far, -r.oof_auc, r.name))
    return tied + rest, [r.name for r in tied]


def cache_for(cache, config: Config) -> FeatureCache:
    """``cache`` itself, or from a {preprocess name ('v1'/'v2'): FeatureCache} mapping the config's."""
    if isinstance(cache, FeatureCache):
        return cache
    if config.preprocess not in cache:
        raise BusiError(f"no feature cache of preprocessing {config.preprocess} for {config.name}",
                        f"extract the dataset with preprocessing {config.preprocess} and give its cache",
                        param="cache")
    return cache[config.preprocess]


def select(cache, candidates, seed: int = 0, folds: int = 5, far_cap: float = 0.10,
           log=None, margin: float = SELECTION_MARGIN) -> SelectionResult:
    """Score each candidate config by a criterion fixed in advance and computed on the
    TRAINING images of split ``seed`` only: out-of-fold malignant recall at FAR <= far_cap.
    Candidates within ``margin`` of the best recall are tied and the simplest of them wins
    (see rank). Returns a SelectionResult, ranking best first, with the margin and the tie.
    ``cache``: one FeatureCache, or {preprocess: FeatureCache} of the SAME images (candidates
    of several preprocessings; their splits must agree, else BusiError)."""
    candidates = list(candidates)
    if not candidates:
        raise BusiError("no candidate configurations to select from", "choose at least one config")
    if not 0 <= far_cap <= 1:
        raise BusiError(f"far_cap must be within [0, 1], got {far_cap!r}", "give a false-alarm rate such as 0.1",
                        param="far_cap")
    if not 0 <= margin < 1:
        raise BusiError(f"margin must be within [0, 1), got {margin!r}", "give a recall margin such as 0.01",
                        param="margin")
    caches = [cache_for(cache, c) for c in candidates]
    sp = split_for(caches[0], seed)
    if len({split_for(c, seed).digest(c.paths) for c in caches}) > 1:
        raise BusiError("the candidates' caches give different splits (not the same images)",
                        "extract the same dataset folder with each preprocessing", param="cache")
    rows = []
    for config, fc in zip(candidates, caches):
        t0 = time.perf_counter()
        train = training_rows(fc, sp.train, config, seed)
        oof = out_of_fold(fc, train, config, seed, folds)
        y_bin = oof["y"] == 2
        row = SelectionRow(name=config.name, config=config,
                           oof_recall_at_far=recall_at_far(y_bin, oof["proba"][:, 2], far_cap),
                           oof_auc=M.roc_auc(y_bin, oof["proba"][:, 2]),
                           oof_accuracy=M.accuracy(oof["y"], oof["proba"].argmax(1)),
                           far_cap=far_cap, seconds=time.perf_counter() - t0,
                           n_params=complexity(config, len(fc.classes))[0])
        rows.append(row)
        if log:
            log(f"{config.name:18s} OOF recall@FAR<={far_cap:g} {row.oof_recall_at_far:.3f}  "
                f"AUC {row.oof_auc:.3f}  acc {row.oof_accuracy:.3f}  ({row.seconds:.1f}s)")
    ranking, tied = rank(rows, {c.name: c for c in candidates}, len(caches[0].classes), margin)
    criterion = (f"{folds}-fold OOF malignant recall at FAR <= {far_cap} on the training split; candidates within "
                 f"{margin} of the best are tied and the simplest wins (fewer parameters, no masks), then OOF AUC")
    return SelectionResult(criterion=criterion, seed=seed, ranking=ranking, margin=margin, tied=tied)
