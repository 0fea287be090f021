"""Command line: one verb per job. Run `busi-lite COMMAND --help` for each."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__

ENV_DATA = "BUSI_LITE_DATA"


def _fail(msg: str, code: int = 2):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _errors():
    """Known user-facing errors: print the message, no traceback."""
    from .backbone import BackboneError
    from .data import DatasetError, ImageError
    from .features import CacheError
    from .model import ModelError

    return (BackboneError, DatasetError, ImageError, CacheError, ModelError, ValueError)


def _log(msg: str):
    click.echo(msg, err=True)


def _dump(obj, path=None):
    from .model import _jsonable

    text = json.dumps(_jsonable(obj), indent=1)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


class _Cli(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _errors() as e:
            _fail(str(e))


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="busi-lite")
def main():
    """busi-lite: breast-ultrasound triage on a laptop CPU.

    \b
    Typical use:
      busi-lite data check ~/BUSI                 # inventory, problems, duplicates
      busi-lite extract --data ~/BUSI             # one-time backbone pass -> cache/busi_features.h5
      busi-lite train --lr 1e-4 --batch 32        # seconds; saves weights/NAME.npz + .json
      busi-lite sweep --seeds 5                   # the paper's grid over repeated splits
      busi-lite predict img.png                   # label, lesion map, safety flags

    Paths: --data or $BUSI_LITE_DATA; --backbone or $BUSI_LITE_BACKBONE;
    --cache or $BUSI_LITE_CACHE; --model or $BUSI_LITE_MODEL.
    """


# ---------------------------------------------------------------- data
@main.group()
def data():
    """Inspect a dataset folder (never modifies it)."""


@data.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Treat every problem (also skippable ones) as an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
@click.option("--classes", default="normal,benign,malignant", show_default=True,
              help="Class folder names, comma-separated.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a contact-sheet PNG of the duplicate groups (mixed-label groups first, "
                   "captions in red) to check them by eye.")
def data_check(directory, strict, as_json, classes, sheet):
    """Inventory of a BUSI-style folder: counts, masks, sizes, problems, duplicate groups.

    Decodes every image and mask. Exits 1 when there are errors (fatal problems,
    or any problem with --strict).
    """
    from . import data as D

    directory = directory or os.environ.get(ENV_DATA)
    if not directory:
        _fail(f"give the dataset folder: busi-lite data check DIR (or set {ENV_DATA})")
    ds = D.discover(directory, tuple(classes.split(",")))
    inv = D.inspect(ds)
    if as_json:
        click.echo(_dump(inv))
    else:
        click.echo(f"dataset {inv['root']}")
        for c, n in inv["counts"].items():
            click.echo(f"  {c:10s} {n:5d} images, {inv['with_lesion_mask'][c]:5d} with a lesion mask")
        click.echo(f"  extra masks merged by union: {inv['extra_masks']}")
        click.echo(f"  width  min/median/max: {inv['width']}   height: {inv['height']}")
        dup = inv["duplicate_groups"]
        click.echo(f"duplicate groups (pHash Hamming <= 10 or identical pixels): {len(dup)} groups, "
                   f"{sum(len(g) for g in dup)} images")
        for g in inv["mixed_label_groups"]:
            click.echo(f"  MIXED LABELS, kept out of training and evaluation: {', '.join(g)}")
        click.echo(f"problems: {len(inv['problems'])}")
        for p in inv["problems"]:
            click.echo(f"  {'ERROR' if p['fatal'] or strict else 'warning'} {p['path']}: {p['what']} -> {p['fix']}")
    if sheet:
        from .report import duplicate_sheet

        mixed = inv["mixed_label_groups"]
        rest = [g for g in inv["duplicate_groups"] if g not in mixed]
        _log(f"wrote {duplicate_sheet(inv['root'], mixed + rest, sheet)}")
    errors = [p for p in inv["problems"] if p["fatal"] or strict]
    sys.exit(1 if errors else 0)


# ---------------------------------------------------------------- extract
@main.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_DATA,
              help=f"BUSI folder with normal/ benign/ malignant/ (or ${ENV_DATA}).")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX backbone (default $BUSI_LITE_BACKBONE, then weights/mobilenet_v2_035_224.onnx).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), envvar="BUSI_LITE_CACHE",
              default=Path("cache/busi_features.h5"), show_default=True, help="HDF5 cache to write.")
@click.option("--views", default="roi,masked,mask", show_default=True,
              help="Mask-fused views to extract for images with a lesion mask ('' for none).")
@click.option("--force", is_flag=True, help="Re-extract everything (also needed after a backbone change).")
@click.option("--strict", is_flag=True, help="Abort on the first bad file instead of skipping it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(data_dir, backbone, out, views, force, strict, as_json):
    """One-time backbone pass: features of every image and its mask views -> HDF5.

    Incremental: unchanged images are reused; a different backbone or
    preprocessing version is refused unless --force. The old cache stays intact
    until the new one is complete.
    """
    from .features import extract as run

    if not data_dir:
        _fail(f"give the dataset folder: --data DIR (or set {ENV_DATA})")
    views = tuple(v for v in views.split(",") if v)
    s = run(data_dir, out, backbone, views=views, force=force, strict=strict, log=_log)
    if as_json:
        click.echo(_dump(s))
    else:
        rate = s["extracted"] / s["seconds"] if s["seconds"] else 0
        click.echo(f"{s['cache']}: {s['images']} images ({', '.join(f'{k} {v}' for k, v in s['counts'].items())}); "
                   f"extracted {s['extracted']}, reused {s['reused']}, skipped {len(s['problems'])} problem(s); "
                   f"{s['seconds']:.1f}s ({rate:.0f} images/s)")
    if s["problems"]:
        sys.exit(1 if strict else 0)


# ---------------------------------------------------------------- train
def _config_options(f):
    opts = [
        click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate."),
        click.option("--batch", type=int, default=32, show_default=True, help="Mini-batch size."),
        click.option("--epochs", type=int, default=50, show_default=True),
        click.option("--masks/--no-masks", default=False, show_default=True,
                     help="Add mask-fused views of TRAINING images as extra samples."),
        click.option("--balance", default="none", show_default=True,
                     help="none | undersample[=N] (N images a class, default 150) | weights."),
        click.option("--head", type=click.Choice(["plain", "mtl"]), default="plain", show_default=True,
                     help="plain: the paper's head; mtl: adds a 7x7 lesion map (multi-task)."),
        click.option("--views", default="roi,masked,mask", show_default=True, help="Views used with --masks."),
        click.option("--lam", type=float, default=1.0, show_default=True, help="Segmentation loss weight (mtl)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _make_config(name, lr, batch, epochs, masks, balance, head, views, lam):
    from .experiments import Config

    per_class = 150
    if balance.startswith("undersample"):
        _, _, n = balance.partition("=")
        per_class = int(n) if n else 150
        balance = "undersample"
    return Config(name=name, lr=lr, batch=batch, epochs=epochs, masks=masks, balance=balance,
                  per_class=per_class, head=head, views=tuple(v for v in views.split(",") if v), lam=lam)


def _print_metrics(title, res, classes):
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


@main.command()
@_config_options
@click.option("--seed", type=int, default=0, show_default=True, help="Split, init and shuffling seed.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help="Feature cache (default $BUSI_LITE_CACHE or cache/busi_features.h5).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Model path stem (default weights/NAME).")
@click.option("--name", default=None, help="Model name (default from the options).")
@click.option("--target-recall", type=float, default=0.95, show_default=True,
              help="Malignant sensitivity the operating point aims at (chosen on training data).")
@click.option("--json", "as_json", is_flag=True, help="Print the model's metadata as JSON.")
def train(lr, batch, epochs, masks, balance, head, views, lam, seed, cache, out, name, target_recall, as_json):
    """Train one configuration on the 85 % training split, calibrate on it, test once.

    Thresholds (malignant operating point, low-confidence, lesion, out-of-
    distribution) come from 5-fold out-of-fold predictions on the training
    images only; the held-out 15 % is touched once, for the reported metrics.
    """
    from .experiments import fit_model
    from .features import FeatureCache

    name = name or f"{head}-lr{lr:g}-b{batch}-e{epochs}{'-masks' if masks else ''}" \
                   f"{'' if balance == 'none' else '-' + balance.replace('=', '')}-s{seed}"
    config = _make_config(name, lr, batch, epochs, masks, balance, head, views, lam)
    fc = FeatureCache(cache)
    model, meta = fit_model(fc, config, seed, target_recall=target_recall, log=_log)
    npz, js = model.save(out or Path("weights") / name)
    if as_json:
        click.echo(_dump(meta))
        return
    cal = meta["calibration"]
    click.echo(f"model {name}: {meta['split']['n_train_images']} training images, {meta['history']['n_train']} "
               f"samples, trained in {meta['train_seconds']:.1f}s (with calibration {meta['total_seconds']:.1f}s)")
    _print_metrics(f"test ({meta['split']['n_test']} images, argmax)", meta["metrics"]["test_argmax"], fc.classes)
    op = meta["metrics"]["test_operating_point"]["malignant"]
    click.echo(f"operating point p(malignant) >= {cal['malignant_threshold']:.3f} (training OOF recall >= "
               f"{target_recall}): test recall {op['recall']:.3f}, FAR {op['far']:.3f}, precision {op['precision']:.3f}")
    click.echo(f"saved {npz} and {js}")


# ---------------------------------------------------------------- sweep
@main.command()
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seeds", type=int, default=5, show_default=True, help="Number of repeated splits (seeds 0..N-1).")
@click.option("--heads", default="plain", show_default=True, help="Comma list of heads: plain,mtl.")
@click.option("--only", default="", help="Comma list of config names (default all twelve).")
@click.option("--fractions", default="1", show_default=True,
              help="Training fractions for the dataset-size study, e.g. 1,0.75,0.5,0.25.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("out/sweep"), show_default=True,
              help="Writes OUT.json and OUT.csv.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Keep the runs already in OUT.partial.json (an interrupted sweep) instead of redoing them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(cache, seeds, heads, only, fractions, out, resume, as_json):
    """The paper's twelve configurations over repeated group-aware splits, with 95 % intervals.

    Progress is saved to OUT.partial.json after every run, so an interrupted
    sweep resumes where it stopped.
    """
    from .experiments import paper_grid, sweep as run
    from .features import FeatureCache
    from .report import sweep_table, write_sweep_csv

    fc = FeatureCache(cache)
    configs = [c for h in heads.split(",") for c in paper_grid(h)]
    if only:
        want = set(only.split(","))
        configs = [c for c in configs if c.name.split("+")[0] in want or c.name in want]
    fracs = [float(x) for x in fractions.split(",")]
    partial = Path(f"{out}.partial.json")
    done = []
    if resume and partial.is_file():
        old = json.loads(partial.read_text())
        if old.get("backbone_sha256") == fc.backbone_sha256 and old.get("cache") == str(fc.path):
            done = old["results"]
            _log(f"resuming: {len(done)} runs kept from {partial}")

    def save(results):
        _dump({"results": results, "cache": str(fc.path), "backbone_sha256": fc.backbone_sha256}, partial)

    res = run(fc, configs, list(range(seeds)), fracs, log=_log, done=done, on_run=save)
    _dump(res, f"{out}.json")
    partial.unlink(missing_ok=True)
    write_sweep_csv(res["summary"], f"{out}.csv")
    click.echo(_dump(res["summary"]) if as_json else sweep_table(res["summary"]))
    _log(f"wrote {out}.json and {out}.csv")


# ---------------------------------------------------------------- select
@main.command()
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--heads", default="plain,mtl", show_default=True, help="Heads to consider.")
@click.option("--only", default="", help="Comma list of paper config names to consider (default all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Split whose TRAINING part is used.")
@click.option("--far-cap", type=float, default=0.10, show_default=True,
              help="Criterion: out-of-fold malignant recall at FAR <= this.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("weights/busi_lite_default"),
              show_default=True, help="Where the chosen model is saved (NAME.npz + NAME.json).")
@click.option("--json", "as_json", is_flag=True)
def select(cache, heads, only, seed, far_cap, out, as_json):
    """Choose the default model by a criterion fixed in advance, on training data only.

    Every candidate is scored by 5-fold out-of-fold malignant recall at a FAR cap
    on the training images of split SEED (ties: out-of-fold AUC); the winner is
    trained on the whole training split, tested once on the held-out split, saved.
    """
    from .experiments import fit_model, paper_grid, select as run
    from .features import FeatureCache

    fc = FeatureCache(cache)
    configs = [c for h in heads.split(",") for c in paper_grid(h)]
    if only:
        want = set(only.split(","))
        configs = [c for c in configs if c.name.split("+")[0] in want]
    ranking = run(fc, configs, seed, far_cap=far_cap, log=_log)
    best = next(c for c in configs if c.name == ranking[0]["name"])
    model, meta = fit_model(fc, best, seed, log=_log)
    meta["selection"] = {"criterion": f"5-fold OOF malignant recall at FAR <= {far_cap} on the training split",
                         "seed": seed, "ranking": ranking}
    model.meta = meta
    npz, js = model.save(out)
    if as_json:
        click.echo(_dump(meta["selection"]))
        return
    click.echo(f"{'config':18s} {'OOF recall@FAR':>14s} {'OOF AUC':>8s} {'OOF acc':>8s}")
    for r in ranking:
        click.echo(f"{r['name']:18s} {r['oof_recall_at_far']:14.3f} {r['oof_auc']:8.3f} {r['oof_accuracy']:8.3f}")
    _print_metrics(f"chosen {best.name}, test ({meta['split']['n_test']} images)", meta["metrics"]["test_argmax"], fc.classes)
    click.echo(f"saved {npz} and {js}")


def _register():
    from .cli_predict import evaluate, predict
    from .cli_report import report

    for cmd in (predict, evaluate, report):
        main.add_command(cmd)


_register()

if __name__ == "__main__":
    main()
