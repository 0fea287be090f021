"""CLI verb `info`: versions, which model and backbone were found, thread settings (for bug reports)."""

from __future__ import annotations

from pathlib import Path

import click

from busi_lite.cli.common import dump


@click.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model stem NAME to check (default $BUSI_LITE_MODEL, then the shipped model).")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX backbone to check (default $BUSI_LITE_BACKBONE, then the shipped one).")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info(model, backbone, as_json):
    """Versions, model and backbone found, thread settings.

    The first thing to paste into a bug report: package versions, which backbone
    and model were found (path, SHA-256, where from: option, variable or
    packaged), whether they load and agree, and the BLAS/onnxruntime threads.
    """
    from busi_lite.serving import info as I

    facts = I.collect(model=model, backbone=backbone)
    click.echo(dump(facts) if as_json else I.render(facts))
