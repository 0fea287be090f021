"""CLI verb `report`: the HTML/Markdown report, with the commands that rebuild its inputs."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from busi_lite.cli.commands import (
    evaluate_command,
    external_evaluate_command,
    extract_command,
    report_external_command,
    sweep_command,
    train_command,
)
from busi_lite.cli.common import log
from busi_lite.cli.options import CommaList


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
@click.option("--external", "externals", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output of `busi-lite evaluate --data DIR --json [--per-image]` (another hospital): "
                   "rendered as its own section; repeatable.")
@click.option("--curves", multiple=True, type=CommaList(name="NAMES"),
              help="Sweep configs for the training curves (Fig. 1-2), comma list or repeated "
                   "(default: the best by malignant recall and model-7pp).")
@click.option("--site-curve", "site_curves", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output OUT.json of `busi-lite site-cv --curve ... --out OUT`: the learning curve on a site; "
                   "repeatable.")
@click.option("--lesion-images", type=click.IntRange(1, 12), default=6, show_default=True,
              help="Test images shown with their lesion map (multi-task models, needs --cache).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html, report.md and the figures (PNG).")
def report(models, sweeps, cache, flags_json, externals, curves, site_curves, lesion_images, out):
    """Paper-style HTML/Markdown report with figures and tables.

    Training curves (Fig. 1-2), confusion matrices (Fig. 3), Tables 1-2 with 95 %
    intervals beside the paper's figures, dataset-size sensitivity, ROC with the
    operating point, lesion maps (multi-task head), the safety flags' evidence and,
    with --external, the model on another hospital's images.

    Writes OUT/report.html (self-contained, figures embedded), OUT/report.md and
    OUT/*.png. Needs matplotlib: pip install 'busi-lite[report]'.

    \b
    Example:
      busi-lite report --model models/m_mtl --sweep out/sweep.json \\
          --cache cache/busi_features.h5 --out out/report
    """
    from busi_lite.features.cache import FeatureCache
    from busi_lite.report.inputs import (
        ReportInputs,
        load_external_input,
        load_flags_input,
        load_model_input,
        load_sweep_input,
    )
    from busi_lite.report.render import build_report

    if not (models or sweeps or flags_json or externals or site_curves):
        raise click.UsageError("give at least one of --model, --sweep, --flags-json, --external, --site-curve")
    curves = [c for item in curves for c in item]
    mis = [load_model_input(m) for m in models]
    sws = [load_sweep_input(s) for s in sweeps]
    flags = load_flags_input(flags_json) if flags_json else []
    exts = [load_external_input(x) for x in externals]
    fc = FeatureCache(cache) if cache else None
    cache_arg = str(fc.path) if fc is not None else (str(sws[0].data.get("cache")) if sws else "CACHE")
    root = fc.attrs.get("dataset_root") if fc is not None else None
    command = report_external_command(externals, models=models, sweeps=sweeps, cache=cache, flags_json=flags_json,
                                      curves=curves, lesion_images=lesion_images, out=out)
    command += "".join(f" --site-curve {shlex.quote(str(x))}" for x in site_curves)
    steps = [extract_command(root, cache_arg)]
    steps += [train_command(mi.meta, mi.path, cache_arg) for mi in mis]
    steps += [sweep_command(sw.data, sw.path, cache_arg) for sw in sws]
    for ev in flags:
        m = next((mi for mi in mis if mi.meta.split.digest == ev.split_digest and mi.meta.config.name == ev.model),
                 None)
        steps.append(evaluate_command(m.path if m else None, cache_arg, flags_json))
    ext_commands = [external_evaluate_command(_model_for_external(xi.ev, mis), xi.ev.data_root, xi.ev.cache, xi.path,
                                              per_image=xi.ev.per_image is not None) for xi in exts]
    steps += ext_commands
    steps.append(command)
    inputs = ReportInputs(out_dir=out, models=mis, sweeps=sws, cache=fc, flags=flags, flags_path=flags_json,
                          externals=exts, external_commands=ext_commands, curves=curves, n_lesions=lesion_images,
                          command=command, steps=steps, site_curves=list(site_curves))
    res = build_report(inputs, log=log)
    click.echo(f"wrote {res['html']} and {res['markdown']} ({len(res['figures'])} figures)")


def _model_for_external(ev, mis) -> str | None:
    """The model stem an external evaluation came from: a given --model of that name and
    backbone, else None when the packaged default has that name, else a placeholder."""
    import json

    from busi_lite.common.resources import packaged
    from busi_lite.model.card import ModelCard

    for mi in mis:
        if mi.meta.config.name == ev.model and mi.meta.backbone_sha256 == ev.backbone_sha256:
            return str(mi.path)
    try:
        card = ModelCard.from_json(json.loads(packaged("model").with_suffix(".json").read_text()))
        if card.config.name == ev.model and card.backbone_sha256 == ev.backbone_sha256:
            return None
    except (OSError, ValueError):  # a broken install (RecordError is a ValueError): name the model instead
        pass
    return f"MODEL_{ev.model}"
