"""CLI verbs `train`, `sweep` and `select`: options validated here (click types), the work in the library."""

from __future__ import annotations

from pathlib import Path

import click

from ..views import VIEWS
from .common import BalanceType, CommaList, NameType, Progress, dump, fraction, head_choice, log

DEFAULT_VIEWS = ",".join(VIEWS)


def _heads_list():
    from ..heads import head_kinds

    return head_kinds()


def _config_options(f):
    from ..config import Config

    d = Config()
    opts = [
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=d.lr, show_default=True,
                     help="Adam learning rate (> 0)."),
        click.option("--batch", type=click.IntRange(min=1), default=d.batch, show_default=True,
                     help="Mini-batch size."),
        click.option("--epochs", type=click.IntRange(min=1), default=d.epochs, show_default=True,
                     help="Passes over the training samples."),
        click.option("--masks/--no-masks", default=d.masks, show_default=True,
                     help="Add mask-fused views of TRAINING images as extra samples."),
        click.option("--balance", type=BalanceType(), default="none", show_default=True,
                     help=f"none | undersample[=N] (N images a class, default {d.per_class}) | weights."),
        click.option("--head", type=head_choice(), default=d.head, show_default=True,
                     help="plain: the paper's head; mtl: adds a 7x7 lesion map (multi-task)."),
        click.option("--views", type=CommaList(VIEWS, name="VIEWS"), default=DEFAULT_VIEWS, show_default=True,
                     help="Mask-fused views used with --masks, comma-separated."),
        click.option("--lam", type=click.FloatRange(min=0), default=d.lam, show_default=True,
                     help="Segmentation loss weight (heads with a lesion map)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_config(name, lr, batch, epochs, masks, balance, head, views, lam):
    """CLI values -> a validated busi_lite.config.Config. ``balance``: (kind, per_class)."""
    from ..config import Config

    kind, per_class = balance
    return Config(name=name, lr=lr, batch=batch, epochs=epochs, masks=masks, balance=kind, per_class=per_class,
                  head=head, views=tuple(views), lam=lam)


def default_name(head, lr, batch, epochs, masks, balance, seed) -> str:
    from ..config import DEFAULT_PER_CLASS

    kind, n = balance
    bal = "" if kind == "none" else "-" + kind + (str(n) if kind == "undersample" and n != DEFAULT_PER_CLASS else "")
    return f"{head}-lr{lr:g}-b{batch}-e{epochs}{'-masks' if masks else ''}{bal}-s{seed}"


def print_metrics(title, res, classes):
    m = res["malignant"]
    click.echo(f"{title}: accuracy {res['accuracy']:.3f}  macro-F1 {res['macro_f1']:.3f}  "
               f"malignant AUC {res['malignant_auc']:.3f}  loss {res['log_loss']:.3f}")
    click.echo("  per-class recall: " + "  ".join(f"{c} {v:.3f}" for c, v in res["per_class_recall"].items()))
    click.echo(f"  malignant: recall {m['recall']:.3f}  MAR {m['mar']:.3f}  FAR {m['far']:.3f}  "
               f"precision {m['precision']:.3f}  (TP {m['tp']} FN {m['fn']} FP {m['fp']} TN {m['tn']})")
    click.echo("  confusion (rows true, cols predicted: " + ", ".join(classes) + ")")
    for c, row in zip(classes, res["confusion"]):
        click.echo(f"    {c:10s} " + " ".join(f"{v:4d}" for v in row))
    if "segmentation" in res:
        s = res["segmentation"]
        click.echo(f"  lesion map vs test masks: Dice {s['dice']:.3f}  IoU {s['iou']:.3f}  (n={s['n']})")


CACHE_HELP = "Feature cache (default $BUSI_LITE_CACHE or cache/busi_features.h5)."
MODELS_DIR = Path("models")  # where train and select write by default (never the package's weights/)


def check_out(out: Path, force: bool) -> Path:
    """Refuse to write into the installed package's weights folder (the shipped default model
    and backbone) unless ``force``."""
    from ..errors import BusiError
    from ..resources import packaged_dir

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
@_config_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Split, init and shuffling seed.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help=CACHE_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Model path stem (default models/NAME in the current folder).")
@click.option("--force", is_flag=True, help="Allow writing into busi-lite's own weights folder.")
@click.option("--name", type=NameType(), default=None,
              help="Model name, letters/digits/._+- only (default from the options).")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Malignant sensitivity the operating point aims at (chosen on training data).")
@click.option("--json", "as_json", is_flag=True, help="Print the model's metadata as JSON.")
def train(lr, batch, epochs, masks, balance, head, views, lam, seed, cache, out, force, name, target_recall, as_json):
    """Train one configuration, calibrate it, test once.

    Trains on the 85 % training split. Thresholds (malignant operating point,
    low-confidence, lesion, out-of-distribution) come from 5-fold out-of-fold
    predictions on the training images only; the held-out 15 % is touched once,
    for the reported metrics. A diverging run is an error and saves nothing.
    """
    from ..experiments import fit_model
    from ..features import FeatureCache

    name = name or default_name(head, lr, batch, epochs, masks, balance, seed)
    out = check_out(out or MODELS_DIR / name, force)
    config = make_config(name, lr, batch, epochs, masks, balance, head, views, lam)
    fc = FeatureCache(cache)
    model, meta = fit_model(fc, config, seed, target_recall=target_recall, log=log)
    npz, js = model.save(out)
    warn(meta)
    if as_json:
        click.echo(dump(meta))
        return
    cal = meta["calibration"]
    click.echo(f"model {name}: {meta['split']['n_train_images']} training images, {meta['history']['n_train']} "
               f"samples, trained in {meta['train_seconds']:.1f}s (with calibration {meta['total_seconds']:.1f}s)")
    print_metrics(f"test ({meta['split']['n_test']} images, argmax)", meta["metrics"]["test_argmax"], fc.classes)
    op = meta["metrics"]["test_operating_point"]["malignant"]
    click.echo(f"operating point p(malignant) >= {cal['malignant_threshold']:.3f} (training OOF recall >= "
               f"{target_recall}): test recall {op['recall']:.3f}, FAR {op['far']:.3f}, precision {op['precision']:.3f}")
    click.echo(f"saved {npz} and {js}")


# ---------------------------------------------------------------- sweep
def _configs(heads, only):
    """The paper's grid for ``heads`` filtered by ``only`` (one rule for sweep and select;
    an unknown name is an error naming --only, before anything runs or is written)."""
    from ..config import grid_for_heads, pick_configs

    return pick_configs(grid_for_heads(heads), only)


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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(cache, seeds, heads, only, fractions, out, resume, as_json):
    """The paper's grid over repeated splits, with 95 % intervals.

    Every configuration x training fraction x split seed (group-aware splits).
    Progress is saved to OUT.partial.json after every run, so an interrupted
    sweep resumes where it stopped.
    """
    from ..experiments import resume_runs, save_partial, sweep as run
    from ..features import FeatureCache
    from ..report.stats import sweep_table, write_sweep_csv

    configs = _configs(heads, only)
    if not fractions:
        raise click.BadParameter("give at least one fraction", param_hint="--fractions")
    fc = FeatureCache(cache)
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
    write_sweep_csv(res["summary"], f"{out}.csv")
    click.echo(dump(res["summary"]) if as_json else sweep_table(res["summary"]))
    log(f"wrote {out}.json and {out}.csv")


# ---------------------------------------------------------------- select
@click.command()
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help=CACHE_HELP)
@click.option("--heads", type=CommaList(_heads_list, name="HEADS"), default="plain,mtl", show_default=True,
              help="Heads to consider, comma-separated.")
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
def select(cache, heads, only, seed, far_cap, out, force, as_json):
    """Choose the default model on training data only.

    Every candidate is scored by a criterion fixed in advance: 5-fold out-of-fold
    malignant recall at a FAR cap on the training images of split SEED. Candidates
    within 0.01 recall of the best are tied and the simplest wins (fewer parameters,
    no masks), then out-of-fold AUC. The winner is trained on the whole training
    split, tested once on the held-out split and saved (not over the shipped default
    unless --force).
    """
    from ..errors import BusiError
    from ..experiments import fit_model, select as run
    from ..features import FeatureCache

    if out is not None:
        check_out(out, force)
    configs = _configs(heads, only)
    fc = FeatureCache(cache)
    progress = Progress(len(configs))

    def each(msg):  # select logs one line per scored candidate
        progress.tick()
        log(progress.prefix(msg))

    selection = run(fc, configs, seed, far_cap=far_cap, log=each)
    best = selection.winner.config
    model, meta = fit_model(fc, best, seed, log=log)
    meta.selection = selection
    if meta.warnings and not force:
        raise BusiError(f"the chosen model {best.name} is not saved: " + "; ".join(meta.warnings),
                        "check the data and the candidates, or pass --force to save it anyway", param="force")
    npz, js = model.save(check_out(out or MODELS_DIR / best.name, force))
    warn(meta)
    if as_json:
        click.echo(dump(selection))
        return
    click.echo(f"{'config':18s} {'OOF recall@FAR':>14s} {'OOF AUC':>8s} {'OOF acc':>8s} {'params':>8s}")
    for r in selection.ranking:
        click.echo(f"{r.name:18s} {r.oof_recall_at_far:14.3f} {r.oof_auc:8.3f} {r.oof_accuracy:8.3f} "
                   f"{r.n_params:8d}")
    if len(selection.tied) > 1:
        click.echo(f"tie: {', '.join(selection.tied)} within {selection.margin} OOF recall of the best; "
                   f"the simplest, {best.name}, was chosen")
    print_metrics(f"chosen {best.name}, test ({meta['split']['n_test']} images)", meta["metrics"]["test_argmax"],
                  fc.classes)
    click.echo(f"saved {npz} and {js}")
