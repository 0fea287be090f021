"""CLI verb `serve`: the local web page and JSON API (optional extra busi-lite[web])."""

from __future__ import annotations

from pathlib import Path

import click

from busi_lite.cli.common import fail
from busi_lite.cli.predict import site_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default answers only this computer; the page has no login.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port; the URL printed says which).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), envvar="BUSI_LITE_MODEL",
              help="Model stem NAME (NAME.npz + NAME.json); default $BUSI_LITE_MODEL, then the shipped model.")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path), envvar="BUSI_LITE_BACKBONE",
              help="ONNX backbone; default $BUSI_LITE_BACKBONE, then the shipped one.")
@click.option("--save", "save_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep every upload and its result in this folder (off by default: uploads stay in memory).")
@click.option("--max-file-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest accepted file, in MB.")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Largest accepted request (all files of one upload), in MB.")
@click.option("--max-request-mpixels", type=click.FloatRange(min=0, min_open=True, max=1e5), default=200.0,
              show_default=True, help="Most decoded pixels per request, in millions (files are decoded one at a "
              "time; a file over the budget gets a 413 error, the others are answered).")
@click.option("--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another name the page may be reached by (the Host header); loopback names and the bound "
                   "--host are always allowed. Repeat for several.")
@site_option
def serve(host, port, model, backbone, save_dir, max_file_mb, max_request_mb, max_request_mpixels, allowed_hosts, site):
    """Local web page: drop images or DICOM files, see verdicts.

    Loads the model once, then serves a page at the printed URL (and a JSON API at
    POST /api/predict, described at /openapi.json). Uploads are processed in memory
    and not stored unless --save is given. Only requests addressed to this computer's
    names (or --allow-host) are answered, and uploads only from the page itself (other
    web sites cannot drive it). The page shows the --site given and whether the
    model is validated there (which decides the answer to trust). Research tool, not a diagnosis.
    """
    try:
        from busi_lite.web.app import serve as run
    except ImportError as e:
        fail(f"the web page needs the web extra ({e.name} is missing) -> pip install \"busi-lite[web]\"")
    run(host=host, port=port, model=model, backbone=backbone, save_dir=save_dir, max_file_mb=max_file_mb,
        max_request_mb=max_request_mb, echo=click.echo, max_request_mpixels=max_request_mpixels,
        allowed_hosts=allowed_hosts, site=site)
