"""CLI verb `report` (registered on the main group in cli.py): the HTML/Markdown report."""

from __future__ import annotations

import shlex
from pathlib import Path

import click


@click.command()
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Trained model stem NAME (NAME.npz + NAME.json); repeatable.")
@click.option("--sweep", "sweeps", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sweep result OUT.json of `busi-lite sweep`; repeatable.")
@click.option("--cache", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="BUSI_LITE_CACHE",
              help="Feature cache the models were trained on (lesion-map examples, input digests); "
                   "default $BUSI_LITE_CACHE.")
@click.option("--flags-json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output of `busi-lite evaluate --json`: rendered as the flags' evidence table.")
@click.option("--curves", multiple=True,
              help="Sweep configs for the training curves (Fig. 1-2), comma list or repeated "
                   "(default: the best by malignant recall and model-7pp).")
@click.option("--lesion-images", type=click.IntRange(1, 12), default=6, show_default=True,
              help="Test images shown with their lesion map (multi-task models, needs --cache).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html, report.md and the figures (PNG).")
def report(models, sweeps, cache, flags_json, curves, lesion_images, out):
    """Paper-style report: training curves (Fig. 1-2), confusion matrices (Fig. 3),
    Tables 1-2 with 95 % intervals beside the paper's figures, dataset-size
    sensitivity, ROC with the operating point, lesion maps (multi-task head) and the
    safety flags' evidence.

    Writes OUT/report.html (self-contained, figures embedded), OUT/report.md and
    OUT/*.png. Needs matplotlib: pip install 'busi-lite[report]'.

    \b
    Example:
      busi-lite report --model weights/m_mtl --sweep out/sweep.json \\
          --cache cache/busi_features.h5 --out out/report
    """
    from .cli import _log
    from .report import build_report

    if not (models or sweeps or flags_json):
        raise click.UsageError("give at least one of --model, --sweep, --flags-json")
    curves = [c for item in curves for c in item.split(",") if c]
    args = ["busi-lite", "report"]
    for m in models:
        args += ["--model", str(m)]
    for s in sweeps:
        args += ["--sweep", str(s)]
    if cache:
        args += ["--cache", str(cache)]
    if flags_json:
        args += ["--flags-json", str(flags_json)]
    if curves:
        args += ["--curves", ",".join(curves)]
    if lesion_images != 6:
        args += ["--lesion-images", str(lesion_images)]
    args += ["--out", str(out)]
    res = build_report(out, models, sweeps, cache=cache, flags=flags_json, curves=curves,
                       n_lesions=lesion_images, command=shlex.join(args), log=_log)
    click.echo(f"wrote {res['html']} and {res['markdown']} ({len(res['figures'])} figures)")
