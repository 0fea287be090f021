"""Experiments: configurations, training sets, one run, sweeps over seeds, calibrated models.

A run = (config, split seed, training fraction): split the cache's images
(group-aware, 85/15), build the training set (views of TRAINING images only,
optional undersampling), train the head, evaluate on the test images' raw view.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from . import __version__
from . import data as D
from . import metrics as M
from .backbone import GRID, N_FEATURES, PREPROCESS_VERSION, SIZE
from .features import FeatureCache
from .head import MTLHead, PlainHead, fit
from .model import OOD, Model
from .geometry import upsample
from .paper import PAPER, paper_figures
from .views import VIEWS

BALANCES = ("none", "undersample", "weights")


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    lr: float = 1e-4
    batch: int = 32
    epochs: int = 50
    masks: bool = False           # add mask-fused views of training images
    balance: str = "none"         # none | undersample | weights
    per_class: int = 150          # undersampling target per class
    head: str = "plain"           # plain | mtl
    views: tuple = VIEWS
    lam: float = 1.0              # weight of the segmentation loss (mtl)
    hidden: int = 100

    def __post_init__(self):
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if self.head not in ("plain", "mtl"):
            raise ValueError(f"head must be 'plain' or 'mtl', got {self.head!r}")
        bad = [v for v in self.views if v not in VIEWS]
        if bad:
            raise ValueError(f"unknown views {bad}; choose from {', '.join(VIEWS)}")


def paper_grid(head: str = "plain") -> list[Config]:
    suffix = "" if head == "plain" else f"+{head}"
    return [Config(name=n + suffix, head=head, **kw) for n, (kw, _) in PAPER.items()]


# ---------------------------------------------------------------- data for one run

def split_for(cache: FeatureCache, seed: int, test_fraction: float = 0.15) -> D.Split:
    return cache.split(seed, test_fraction)


def training_rows(cache: FeatureCache, rows, config: Config, seed: int, fraction: float = 1.0) -> np.ndarray:
    """Subset of ``rows`` used for training: a stratified ``fraction`` of the images, then
    (balance=undersample) at most ``per_class`` images a class; seeded."""
    rows = np.asarray(rows)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 1])
    keep = []
    for c in range(len(cache.classes)):
        r = rows[cache.labels[rows] == c]
        n = max(1, int(round(fraction * len(r)))) if len(r) else 0
        if config.balance == "undersample":
            n = min(n, config.per_class)
        keep.append(np.sort(rng.permutation(r)[:n]) if n < len(r) else r)
    return np.sort(np.concatenate(keep))


def build_xy(cache: FeatureCache, rows, config: Config, with_views: bool) -> dict:
    """Arrays for training or evaluation of ``rows``.

    X: plain -> pooled [n,1280] float32; mtl -> spatial [n,49,1280] float16.
    With views, each row's valid mask views follow as extra samples of its label.
    Returns X, y, row (source image row of each sample), view, sample_weight, seg_target.
    """
    rows = np.asarray(rows, dtype=np.int64)
    parts = [("raw", rows)]
    if with_views:
        for v in config.views:
            parts.append((v, rows[cache.valid(v, rows)]))
    get = cache.pooled if config.head == "plain" else cache.spatial
    X = np.concatenate([get(v, r) for v, r in parts])
    src = np.concatenate([r for _, r in parts])
    y = cache.labels[src]
    out = {"X": X, "y": y, "row": src, "view": np.concatenate([[v] * len(r) for v, r in parts])}
    if config.head == "mtl":
        out["seg_target"] = np.concatenate([cache.grid(v, r) for v, r in parts])
    w = np.ones(len(y), np.float32)
    if config.balance == "weights":  # inverse class frequency, mean weight 1
        counts = np.bincount(y, minlength=len(cache.classes)).astype(np.float64)
        cw = np.where(counts > 0, len(y) / (len(counts) * np.maximum(counts, 1)), 0)
        w = cw[y].astype(np.float32)
    out["sample_weight"] = w
    return out


def make_head(config: Config, n_classes: int, seed: int):
    if config.head == "mtl":
        return MTLHead(N_FEATURES, config.hidden, n_classes, lam=config.lam, seed=seed)
    return PlainHead(N_FEATURES, config.hidden, n_classes, seed=seed)


def train_head(cache: FeatureCache, rows, config: Config, seed: int, val_rows=None):
    """Train on ``rows`` (+ their views when config.masks). Returns (head, history)."""
    tr = build_xy(cache, rows, config, with_views=config.masks)
    head = make_head(config, len(cache.classes), seed)
    kw = {}
    if val_rows is not None and len(val_rows):
        va = build_xy(cache, val_rows, config, with_views=False)
        kw = dict(X_val=va["X"], y_val=va["y"])
    seg = dict(seg_target=tr["seg_target"], seg_weight=np.ones(len(tr["y"]), np.float32)) if config.head == "mtl" else {}
    hist = fit(head, tr["X"], tr["y"], lr=config.lr, batch_size=config.batch, epochs=config.epochs, seed=seed,
               sample_weight=tr["sample_weight"], **seg, **kw)
    hist["n_train"] = int(len(tr["y"]))
    return head, hist


def predict_rows(head, cache: FeatureCache, rows, config: Config) -> dict:
    """Raw-view predictions of ``rows``: proba [n,C], lesion [n,49] or None, pooled [n,1280]."""
    xy = build_xy(cache, rows, config, with_views=False)
    out = {"proba": head.predict_proba(xy["X"]), "lesion": None, "y": xy["y"]}
    if config.head == "mtl":
        out["lesion"] = head.lesion_map(xy["X"])
    return out


def lesion_scores(lesion: np.ndarray, masks224: np.ndarray) -> dict:
    """Mean Dice/IoU of 7x7 lesion maps [n,49] (upsampled bilinearly to 224x224,
    threshold 0.5) against the true masks [n,224,224] of the same crop."""
    dice, iou = [], []
    for m, t in zip(lesion, masks224):
        up = upsample(m.reshape(GRID, GRID), SIZE, SIZE) >= 0.5
        d, j = M.dice_iou(up, t)
        dice.append(d)
        iou.append(j)
    return {"dice": float(np.mean(dice)) if dice else float("nan"),
            "iou": float(np.mean(iou)) if iou else float("nan"), "n": len(dice)}


def evaluate_rows(head, cache: FeatureCache, rows, config: Config, malignant_threshold=None, pred=None) -> dict:
    """Metrics of ``rows``; ``pred``: their predict_rows() output when already computed."""
    p = pred if pred is not None else predict_rows(head, cache, rows, config)
    res = M.summarize(p["y"], p["proba"], cache.classes, malignant_threshold=malignant_threshold)
    if p["lesion"] is not None:
        lesion_rows = np.asarray(rows)[cache.has_mask[rows]]
        sel = cache.has_mask[rows]
        res["segmentation"] = lesion_scores(p["lesion"][sel], cache.mask224(lesion_rows))
    return res


def run_one(cache: FeatureCache, config: Config, seed: int, fraction: float = 1.0,
            test_fraction: float = 0.15) -> dict:
    """Train ``config`` on split ``seed`` and evaluate on its test images."""
    t0 = time.perf_counter()
    sp = split_for(cache, seed, test_fraction)
    rows = training_rows(cache, sp.train, config, seed, fraction)
    head, hist = train_head(cache, rows, config, seed, val_rows=sp.test)
    seconds = time.perf_counter() - t0
    res = evaluate_rows(head, cache, sp.test, config)
    return {"config": asdict(config), "seed": seed, "fraction": fraction, "split": sp.digest(cache.paths),
            "n_train_images": int(len(rows)), "n_train_samples": hist["n_train"], "n_test": int(len(sp.test)),
            "n_excluded": int(len(sp.excluded)), "train_seconds": seconds, "test": res, "history": hist}


# ---------------------------------------------------------------- sweeps

KEY_METRICS = {
    "malignant_recall": lambda r: r["test"]["malignant"]["recall"],
    "malignant_mar": lambda r: r["test"]["malignant"]["mar"],
    "malignant_far": lambda r: r["test"]["malignant"]["far"],
    "malignant_precision": lambda r: r["test"]["malignant"]["precision"],
    "malignant_auc": lambda r: r["test"]["malignant_auc"],
    "accuracy": lambda r: r["test"]["accuracy"],
    "macro_f1": lambda r: r["test"]["macro_f1"],
    "test_loss": lambda r: r["test"]["log_loss"],
    "dice": lambda r: r["test"].get("segmentation", {}).get("dice", float("nan")),
    "train_seconds": lambda r: r["train_seconds"],
}


def aggregate(results: list[dict]) -> list[dict]:
    """Group runs by (config name, fraction): mean and 95 % interval of each key metric."""
    groups = {}
    for r in results:
        groups.setdefault((r["config"]["name"], r["fraction"]), []).append(r)
    rows = []
    for (name, frac), rs in groups.items():
        row = {"name": name, "fraction": frac, "seeds": [r["seed"] for r in rs], "config": rs[0]["config"]}
        for key, get in KEY_METRICS.items():
            mean, lo, hi = M.mean_ci([get(r) for r in rs])
            row[key] = {"mean": mean, "lo": lo, "hi": hi}
        paper = paper_figures(name)
        if paper is not None:
            row["paper"] = paper
        rows.append(row)
    return rows


def sweep(cache: FeatureCache, configs, seeds, fractions=(1.0,), log=None, done=None, on_run=None) -> dict:
    """Every config x fraction x seed. ``done``: results of an earlier, interrupted sweep
    (same cache) that are kept instead of rerun; ``on_run(results)`` after each run."""
    wanted = {(c.name, f, s) for c in configs for f in fractions for s in seeds}
    results = [r for r in done or [] if (r["config"]["name"], r["fraction"], r["seed"]) in wanted]
    have = {(r["config"]["name"], r["fraction"], r["seed"]) for r in results}
    for config in configs:
        for frac in fractions:
            for seed in seeds:
                if (config.name, frac, seed) in have:
                    continue
                r = run_one(cache, config, seed, frac)
                results.append(r)
                if on_run:
                    on_run(results)
                if log:
                    m = r["test"]["malignant"]
                    log(f"{config.name:14s} frac={frac:<4} seed={seed}  recall={m['recall']:.3f} "
                        f"far={m['far']:.3f} auc={r['test']['malignant_auc']:.3f} ({r['train_seconds']:.1f}s)")
    return {"results": results, "summary": aggregate(results), "cache": str(cache.path),
            "backbone_sha256": cache.backbone_sha256, "package_version": __version__}


# ---------------------------------------------------------------- calibrated model

def out_of_fold(cache: FeatureCache, rows, config: Config, seed: int, k: int = 5) -> dict:
    """Out-of-fold raw-view predictions on ``rows`` (group-aware k-fold inside them):
    proba [n,C], lesion [n,49] | None, ood score [n], y [n]. Only ``rows`` are touched."""
    rows = np.asarray(rows)
    fold = D.group_kfold(cache.labels[rows], cache.groups[rows], [cache.paths[i] for i in rows], k, seed)
    C = len(cache.classes)
    proba = np.zeros((len(rows), C), np.float32)
    lesion = np.zeros((len(rows), GRID * GRID), np.float32) if config.head == "mtl" else None
    ood = np.zeros(len(rows))
    for f in range(k):
        tr, te = rows[fold != f], rows[fold == f]
        if len(te) == 0:
            continue
        head, _ = train_head(cache, tr, config, seed + 1000 * (f + 1))
        p = predict_rows(head, cache, te, config)
        proba[fold == f] = p["proba"]
        if lesion is not None:
            lesion[fold == f] = p["lesion"]
        ood[fold == f] = OOD.fit(cache.pooled("raw", tr)).score(cache.pooled("raw", te))
    return {"proba": proba, "lesion": lesion, "ood": ood, "y": cache.labels[rows]}


def calibrate(oof: dict, target_recall: float = 0.95, error_share: float = 0.5,
              ood_quantile: float = 0.99, mismatch_quantile: float = 0.05, malignant: int = 2,
              normal: int = 0) -> dict:
    """Thresholds chosen on out-of-fold training predictions only.

    - malignant_threshold: highest p(malignant) threshold with OOF recall >= target_recall;
    - low_confidence: max-probability below which ``error_share`` of the OOF errors fall;
    - lesion_threshold: max-cell lesion probability separating normal from lesion images
      (best balanced accuracy on OOF), for showing "lesion present";
    - lesion_absent / lesion_present: for the mismatch flag, only clear disagreement counts:
      a peak below the ``mismatch_quantile`` quantile of OOF peaks on lesion images means
      "no lesion", above the 1 - ``mismatch_quantile`` quantile on normal images "lesion";
    - ood_threshold: the ``ood_quantile`` quantile of OOF OOD scores.
    """
    y, proba = oof["y"], oof["proba"]
    thr = M.threshold_for_recall(y == malignant, proba[:, malignant], target_recall)
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    errors = conf[pred != y]
    low = float(np.quantile(errors, error_share)) if len(errors) else 0.0
    out = {"malignant_threshold": float(thr), "target_recall": target_recall,
           "oof_far_at_threshold": M.malignant_metrics(y, M.predict_labels(proba, thr))["far"],
           "low_confidence": low, "error_share": error_share,
           "ood_threshold": float(np.quantile(oof["ood"], ood_quantile)), "ood_quantile": ood_quantile}
    if oof.get("lesion") is not None:
        peak = oof["lesion"].max(axis=1)
        lesion_true = y != normal
        best = (0.5, -1.0)
        for t in np.unique(np.round(peak, 3)):
            ba = 0.5 * ((peak[lesion_true] >= t).mean() + (peak[~lesion_true] < t).mean())
            if ba > best[1]:
                best = (float(t), float(ba))
        out["lesion_threshold"], out["lesion_oof_balanced_accuracy"] = best
        out["lesion_absent"] = float(np.quantile(peak[lesion_true], mismatch_quantile))
        out["lesion_present"] = float(np.quantile(peak[~lesion_true], 1 - mismatch_quantile))
        out["mismatch_quantile"] = mismatch_quantile
    return out


def fit_model(cache: FeatureCache, config: Config, seed: int = 0, test_fraction: float = 0.15,
              folds: int = 5, target_recall: float = 0.95, log=None) -> tuple[Model, dict]:
    """Train ``config`` on split ``seed``'s training images, calibrate thresholds on
    out-of-fold training predictions, fit OOD statistics, evaluate once on the test images.
    Returns (model, report)."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    sp = split_for(cache, seed, test_fraction)
    rows = training_rows(cache, sp.train, config, seed)
    head, hist = train_head(cache, rows, config, seed, val_rows=sp.test)
    t_train = time.perf_counter() - t0
    log(f"trained {config.name} on {hist['n_train']} samples ({len(rows)} images) in {t_train:.1f}s")
    oof = out_of_fold(cache, rows, config, seed, folds)
    cal = calibrate(oof, target_recall)
    ood = OOD.fit(cache.pooled("raw", rows))
    ood.threshold = cal["ood_threshold"]
    test_pred = predict_rows(head, cache, sp.test, config)
    test_argmax = evaluate_rows(head, cache, sp.test, config, pred=test_pred)
    test_op = evaluate_rows(head, cache, sp.test, config, malignant_threshold=cal["malignant_threshold"],
                            pred=test_pred)
    meta = {
        "config": asdict(config), "classes": list(cache.classes), "backbone_sha256": cache.backbone_sha256,
        "backbone_file": cache.attrs.get("backbone_file"), "preprocess_version": PREPROCESS_VERSION,
        "feature_shape": [GRID, GRID, N_FEATURES], "package_version": __version__,
        "split": {"seed": seed, "test_fraction": test_fraction, "digest": sp.digest(cache.paths),
                  "n_train_images": int(len(rows)), "n_test": int(len(sp.test)),
                  "excluded": [cache.paths[i] for i in sp.excluded]},
        "calibration": cal, "metrics": {"test_argmax": test_argmax, "test_operating_point": test_op},
        "test_predictions": {"path": [cache.paths[i] for i in sp.test], "y": test_pred["y"],
                             "proba": np.round(test_pred["proba"], 5)},
        "history": hist, "train_seconds": t_train, "total_seconds": time.perf_counter() - t0,
    }
    return Model(head, meta, ood), meta



# ---------------------------------------------------------------- model selection

def recall_at_far(y_bin, score, far_cap: float) -> float:
    """Highest recall over thresholds whose false-alarm rate is <= far_cap."""
    fpr, tpr, _ = M.roc_curve(y_bin, score)
    ok = fpr <= far_cap
    return float(tpr[ok].max()) if ok.any() else 0.0


def select(cache: FeatureCache, candidates, seed: int = 0, folds: int = 5, far_cap: float = 0.10,
           log=None) -> list[dict]:
    """Score each candidate config by a criterion fixed in advance and computed on the
    TRAINING images of split ``seed`` only: out-of-fold malignant recall at FAR <= far_cap
    (ties broken by out-of-fold malignant AUC). Returns rows sorted best first."""
    sp = split_for(cache, seed)
    rows = []
    for config in candidates:
        t0 = time.perf_counter()
        train = training_rows(cache, sp.train, config, seed)
        oof = out_of_fold(cache, train, config, seed, folds)
        y_bin = oof["y"] == 2
        row = {"name": config.name, "config": asdict(config),
               "oof_recall_at_far": recall_at_far(y_bin, oof["proba"][:, 2], far_cap),
               "oof_auc": M.roc_auc(y_bin, oof["proba"][:, 2]),
               "oof_accuracy": M.accuracy(oof["y"], oof["proba"].argmax(1)),
               "far_cap": far_cap, "seconds": time.perf_counter() - t0}
        rows.append(row)
        if log:
            log(f"{config.name:18s} OOF recall@FAR<={far_cap:g} {row['oof_recall_at_far']:.3f}  "
                f"AUC {row['oof_auc']:.3f}  acc {row['oof_accuracy']:.3f}  ({row['seconds']:.1f}s)")
    return sorted(rows, key=lambda r: (-r["oof_recall_at_far"], -r["oof_auc"]))
