"""CLI verbs `train`, `sweep` and `select`: options validated here (click types), the work in the library."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import click

from busi_lite.cli.common import (
    FiniteFloatRange,
    NameType,
    Progress,
    dump,
    fraction,
    log,
)
from busi_lite.cli.options import CommaList, config_options, declared_choices, make_config
from busi_lite.common.constants import CLASSES


def _heads_list():
    from busi_lite.heads import head_kinds

    return head_kinds()


def cache_path(cache, preprocess="v1"):
    """--cache, else $BUSI_LITE_CACHE, else the default cache of ``preprocess`` (features.default_cache)."""
    import os

    from busi_lite.features.cache import ENV_CACHE, default_cache

    return cache or os.environ.get(ENV_CACHE) or default_cache(preprocess)


def print_metrics(title, res, classes):
    """Print a records.Metrics."""
    m = res.malignant
    click.echo(f"{title}: accuracy {res.accuracy:.3f}  macro-F1 {res.macro_f1:.3f}  "
               f"malignant AUC {res.malignant_auc:.3f}  loss {res.log_loss:.3f}")
    click.echo("  per-class recall: " + "  ".join(f"{c} {v:.3f}" for c, v in res.per_class_recall.items()))
    click.echo(f"  malignant: recall {m['recall']:.3f}  MAR {m['mar']:.3f}  FAR {m['far']:.3f}  "
               f"precision {m['precision']:.3f}  (TP {m['tp']} FN {m['fn']} FP {m['fp']} TN {m['tn']})")
    click.echo("  confusion (rows true, cols predicted: " + ", ".join(classes) + ")")
    for c, row in zip(classes, res.confusion):
        click.echo(f"    {c:10s} " + " ".join(f"{v:4d}" for v in row))
    if res.segmentation is not None:
        s = res.segmentation
        click.echo(f"  lesion map vs test masks: Dice {s['dice']:.3f}  IoU {s['iou']:.3f}  (n={s['n']})")


CACHE_HELP = ("Feature cache (default $BUSI_LITE_CACHE, else cache/busi_features.h5 for v1, "
              "cache/busi_features_v2.h5 for v2).")
MODELS_DIR = Path("models")  # where train and select write by default (never the package's weights/)


def check_out(out: Path, force: bool) -> Path:
    """Refuse to write into the installed package's weights folder (the shipped default model
    and backbone) unless ``force``."""
    from busi_lite.common.errors import BusiError
    from busi_lite.common.resources import packaged_dir

    stem = Path(out)
    folder = stem.expanduser().parent.resolve()
    if folder == packaged_dir().resolve() and not force:
        raise BusiError(f"{stem} is in busi-lite's own weights folder ({folder}), which holds the shipped "
                        "default model", "write elsewhere (the default is models/NAME), or pass --force to "
                        "replace the shipped files", param="force")
    return stem


def warn(card) -> None:
    """Print a card's warnings loudly on stderr."""
    for w in card.warnings or ():
        log(f"WARNING: {w}")


# ---------------------------------------------------------------- train
@click.command()
@config_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Split, init and shuffling seed.")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Training source: a BUSI-layout folder or a CSV manifest file,label[,patient][,x0,y0,x1,y1]. "
                   "Repeat it to train on several sources (each gets its own group-aware split and held-out "
                   "figures); its features are extracted once into cache/NAME_features*.h5 unless --cache is given.")
@click.option("--cache", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help=CACHE_HELP + " Repeat it for several sources (one per --data, in order, or alone).")
@click.option("--source-weight", type=click.Choice(["balanced", "by-count"]), default="balanced", show_default=True,
              help="Several sources: balanced = each source counts the same in total; by-count = each image once.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Model path stem (default models/NAME in the current folder).")
@click.option("--force", is_flag=True, help="Allow writing into busi-lite's own weights folder.")
@click.option("--name", type=NameType(), default=None,
              help="Model name, letters/digits/._+- only (default from the options).")
@click.option("--target-recall", type=FiniteFloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Malignant sensitivity the operating point aims at (chosen on training data).")
@click.option("--box", is_flag=True, help="Also add the lesion-box head (predict --box); the cache needs the box views.")
@click.option("--json", "as_json", is_flag=True, help="Print the model's metadata as JSON.")
def train(seed, data, cache, source_weight, out, force, name, target_recall, box, as_json, **recipe):
    """Train one configuration, calibrate it, test once.

    Trains on the 85 % training split. Thresholds (malignant operating point,
    low-confidence, lesion, out-of-distribution) come from 5-fold out-of-fold
    predictions on the training images only; the held-out 15 % is touched once,
    for the reported metrics. A diverging run is an error and saves nothing.

    Several sources (--data A --data B, or --cache repeated; e.g. BUSI and your
    hospital's manifest): every source is split on its own (patients never
    straddle train and test) and gets its own held-out figures on the model card;
    a model whose sources have no normal class gets a benign/malignant head.
    """
    from busi_lite.cli.sources import training_sources
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import default_name
    from busi_lite.training.experiments import fit_model
    from busi_lite.training.sources import fit_sources

    config = make_config(name or "custom", recipe)
    sources = training_sources(data, cache, config.preprocess, log)
    single = not data and len(sources) <= 1 and (not sources or sources[0].cache.classes == CLASSES)
    if name is None:
        auto = default_name(config, seed)
        if not single:
            auto += "-" + "+".join(re.sub(r"[^A-Za-z0-9._-]", "", s.name) or "src" for s in sources)
        config = replace(config, name=auto)
    name = config.name
    out = check_out(out or MODELS_DIR / name, force)
    if single:  # BUSI alone (or one three-class cache): the paper's single-split training
        fc = sources[0].cache if sources else FeatureCache(cache_path(None, config.preprocess))
        model, meta = fit_model(fc, config, seed, target_recall=target_recall, log=log, box=box)
    else:
        model, meta = fit_sources(sources, config, seed, source_weight=source_weight, target_recall=target_recall,
                                  box=box, log=log)
    npz, js = model.save(out)
    warn(meta)
    if as_json:
        click.echo(dump(meta))
        log(how_to_use(npz))
        return
    cal = meta.calibration
    click.echo(f"model {name}: {meta.split.n_train_images} training images, {meta.history['n_train']} "
               f"samples, trained in {meta.train_seconds:.1f}s (with calibration {meta.total_seconds:.1f}s)")
    print_metrics(f"test ({meta.split.n_test} images, argmax)", meta.metrics.test_argmax, meta.classes)
    for s in meta.sources or ():
        click.echo(f"  source {s.name} ({s.kind}, weight {s.weight:.2f}): {s.n_train} training / {s.n_test} held-out "
                   f"images; held-out AUC {s.test_auc:.3f} [{s.test_auc_lo:.3f}, {s.test_auc_hi:.3f}], recall "
                   f"{s.test_recall:.3f} FAR {s.test_far:.3f} at the operating point"
                   + (f"; box head AUC {s.box_test_auc:.3f}" if s.box_test_auc is not None else ""))
    op = meta.metrics.test_operating_point.malignant
    click.echo(f"operating point p(malignant) >= {cal.malignant_threshold:.3f} (training OOF recall >= "
               f"{target_recall}): test recall {op['recall']:.3f}, FAR {op['far']:.3f}, precision {op['precision']:.3f}")
    click.echo(f"saved {npz} and {js}")
    click.echo(how_to_use(npz))


# ---------------------------------------------------------------- sweep
FLIPS = {"off": (False,), "on": (True,), "both": (False, True)}
PREPROCESSINGS = declared_choices("preprocess")  # the recipe's declared preprocessings (model.config)


def _configs(heads, only, preprocess=("v1",), flips=(False,)):
    """The paper's grid for ``heads`` x ``preprocess`` x ``flips`` filtered by ``only`` (one rule
    for sweep and select; an unknown name is an error naming --only, before anything runs or is written)."""
    from busi_lite.model.config import grid_for_heads, pick_configs

    return pick_configs(grid_for_heads(heads, preprocess, flips), only)


@click.command()
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help=CACHE_HELP)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Number of repeated splits (seeds 0..N-1).")
@click.option("--heads", type=CommaList(_heads_list, name="HEADS"), default="plain", show_default=True,
              help="Comma list of heads, e.g. plain,mtl.")
@click.option("--only", type=CommaList(name="NAMES"), default="",
              help="Comma list of config names, e.g. model-7,model-7pp (default all twelve).")
@click.option("--fractions", type=CommaList(item=fraction, name="FRACTIONS"), default="1", show_default=True,
              help="Training fractions in (0, 1] for the dataset-size study, e.g. 1,0.75,0.5,0.25.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("out/sweep"), show_default=True,
              help="Writes OUT.json and OUT.csv.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Keep the runs already in OUT.partial.json (an interrupted sweep) instead of redoing them.")
@click.option("--preprocess", type=click.Choice(PREPROCESSINGS), default="v1", show_default=True,
              help="Preprocessing of the configs (must be the cache's).")
@click.option("--flip", type=click.Choice(list(FLIPS)), default="off", show_default=True,
              help="Flip averaging: off, on, or both (each config with and without).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(cache, seeds, heads, only, fractions, out, resume, preprocess, flip, as_json):
    """The paper's grid over repeated splits, with 95 % intervals.

    Every configuration x training fraction x split seed (group-aware splits).
    Progress is saved to OUT.partial.json after every run, so an interrupted
    sweep resumes where it stopped.
    """
    from busi_lite.features.cache import FeatureCache
    from busi_lite.report.stats import sweep_table, write_sweep_csv
    from busi_lite.training.experiments import resume_runs, save_partial
    from busi_lite.training.experiments import sweep as run

    configs = _configs(heads, only, (preprocess,), FLIPS[flip])
    if not fractions:
        raise click.BadParameter("give at least one fraction", param_hint="--fractions")
    if len(set(fractions)) != len(fractions):
        raise click.BadParameter(f"{','.join(map(str, fractions))} repeats a fraction; each runs once",
                                 param_hint="--fractions")
    fc = FeatureCache(cache_path(cache, preprocess))
    partial = Path(f"{out}.partial.json")
    done = resume_runs(partial, fc, log=log) if resume else []
    if done:
        log(f"resuming: {len(done)} runs kept from {partial}")
    wanted = {(c.name, f, s) for c in configs for f in fractions for s in range(seeds)}
    kept = {(r.config.name, r.fraction, r.seed) for r in done} & wanted
    progress = Progress(len(wanted) - len(kept))

    def save(results):
        progress.tick()
        save_partial(partial, results, fc)

    res = run(fc, configs, list(range(seeds)), fractions, log=lambda m: log(progress.prefix(m)), done=done,
              on_run=save)
    dump(res, f"{out}.json")
    partial.unlink(missing_ok=True)
    write_sweep_csv(res.summary, f"{out}.csv")
    click.echo(dump(res.summary) if as_json else sweep_table(res.summary))
    log(f"wrote {out}.json and {out}.csv")


# ---------------------------------------------------------------- select
@click.command()
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="Feature cache; repeat it for candidates of several preprocessings (each cache is used for "
                   "the configs of its own preprocessing). Default: each --preprocess's default cache.")
@click.option("--heads", type=CommaList(_heads_list, name="HEADS"), default="plain,mtl", show_default=True,
              help="Heads to consider, comma-separated.")
@click.option("--preprocess", type=CommaList(PREPROCESSINGS, name="PREPROCESS"), default="v1", show_default=True,
              help="Preprocessings to consider, e.g. v1,v2.")
@click.option("--flip", type=click.Choice(list(FLIPS)), default="off", show_default=True,
              help="Flip averaging of the candidates: off, on, or both.")
@click.option("--only", type=CommaList(name="NAMES"), default="",
              help="Comma list of config names to consider, e.g. model-7,model-7p+mtl (default all).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Split whose TRAINING part is used.")
@click.option("--far-cap", type=click.FloatRange(0, 1), default=0.10, show_default=True,
              help="Criterion: out-of-fold malignant recall at FAR <= this.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the chosen model is saved, NAME.npz + NAME.json (default models/CONFIG-NAME).")
@click.option("--force", is_flag=True, help="Allow replacing the shipped default model (--out in busi-lite's "
              "weights folder) and saving a winner whose out-of-fold AUC is at chance.")
@click.option("--json", "as_json", is_flag=True, help="Print the selection (criterion, ranking, tie) as JSON.")
def select(cache, heads, preprocess, flip, only, seed, far_cap, out, force, as_json):
    """Choose the default model on training data only.

    Every candidate is scored by a criterion fixed in advance: 5-fold out-of-fold
    malignant recall at a FAR cap on the training images of split SEED. Candidates
    within 0.01 recall of the best are tied and the simplest wins (fewer parameters,
    no masks), then out-of-fold AUC. The winner is trained on the whole training
    split, tested once on the held-out split and saved (not over the shipped default
    unless --force).
    """
    from busi_lite.common.errors import BusiError
    from busi_lite.training.experiments import fit_model
    from busi_lite.training.experiments import select as run

    if out is not None:
        check_out(out, force)
    configs = _configs(heads, only, preprocess, FLIPS[flip])
    caches = open_caches(cache, preprocess)
    progress = Progress(len(configs))

    def each(msg):  # select logs one line per scored candidate
        progress.tick()
        log(progress.prefix(msg))

    selection = run(caches, configs, seed, far_cap=far_cap, log=each)
    best = selection.winner.config
    fc = caches[best.preprocess]
    model, meta = fit_model(fc, best, seed, log=log)
    meta.selection = selection
    if meta.warnings and not force:
        raise BusiError(f"the chosen model {best.name} is not saved: " + "; ".join(meta.warnings),
                        "check the data and the candidates, or pass --force to save it anyway", param="force")
    npz, js = model.save(check_out(out or MODELS_DIR / best.name, force))
    warn(meta)
    if as_json:
        click.echo(dump(selection))
        log(how_to_use(npz))
        return
    w = max(18, *(len(r.name) for r in selection.ranking))
    click.echo(f"{'config':{w}s} {'OOF recall@FAR':>14s} {'OOF AUC':>8s} {'OOF acc':>8s} {'params':>8s}")
    for r in selection.ranking:
        click.echo(f"{r.name:{w}s} {r.oof_recall_at_far:14.3f} {r.oof_auc:8.3f} {r.oof_accuracy:8.3f} "
                   f"{r.n_params:8d}")
    if len(selection.tied) > 1:
        click.echo(f"tie: {', '.join(selection.tied)} within {selection.margin} OOF recall of the best; "
                   f"the simplest, {best.name}, was chosen")
    print_metrics(f"chosen {best.name}, test ({meta.split.n_test} images)", meta.metrics.test_argmax, fc.classes)
    click.echo(f"saved {npz} and {js}")
    click.echo(how_to_use(npz))


def how_to_use(npz: Path) -> str:
    """What to type to use a model just saved (predict/evaluate/serve use the shipped model otherwise)."""
    from busi_lite.model.model import ENV_MODEL, Model
    from busi_lite.model.provenance import provenance

    stem = npz.with_suffix("")
    pv = provenance(Model.load(stem))
    return (f"use it: busi-lite predict IMAGE --model {stem}  (or export {ENV_MODEL}={stem} for predict, evaluate "
            f"and serve); its results will name it model {pv.name} (digest {pv.short_digest})")


def open_caches(paths, preprocess) -> dict:
    """{preprocess: FeatureCache} for select: each given cache under its own preprocessing
    (read from the file), then each wanted preprocessing without one from its default cache."""
    from busi_lite.common.errors import BusiError
    from busi_lite.features.cache import FeatureCache, default_cache
    from busi_lite.features.preprocess import SHORT

    short = {v: k for k, v in SHORT.items()}
    caches = {}
    for p in paths:
        fc = FeatureCache(p)
        name = short.get(fc.preprocess_version)
        if name is None or name in caches:
            raise BusiError(f"{p}: preprocessing {fc.preprocess_version!r} is unknown or given twice",
                            "give one cache per preprocessing", param="cache")
        caches[name] = fc
    for pp in preprocess:
        if pp not in caches:  # $BUSI_LITE_CACHE only when it is the one cache asked for
            caches[pp] = FeatureCache(cache_path(None, pp) if len(preprocess) == 1 and not paths
                                      else default_cache(pp))
    return caches
