"""CLI verbs `data check` and `extract`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from busi_lite.cli.common import ENV_DATA, dump, fail, log
from busi_lite.cli.options import CommaList
from busi_lite.common.constants import CLASSES
from busi_lite.features.views import ALL_VIEWS


@click.group()
def data():
    """Inspect a dataset folder (never modifies it)."""


@data.command("check")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Treat every problem (also skippable ones) as an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
@click.option("--classes", default=None,
              help="Class folder names, comma-separated, all required. Default: normal,benign,malignant, "
                   "any subset present (a missing class is a note).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a contact-sheet PNG of the duplicate groups (mixed-label groups first, "
                   "captions in red) to check them by eye.")
def data_check(directory, strict, as_json, classes, sheet):
    """Inventory a dataset: counts, problems, duplicates.

    DIRECTORY: a BUSI-style folder (class folders) or a CSV manifest
    file,label[,patient][,x0,y0,x1,y1] (paths relative to the CSV). Counts, masks,
    boxes, sizes, problems (unknown labels, missing files, rows listed twice,
    boxes outside the image, ...) and duplicate groups. Decodes every image and
    mask. Exits 1 when there are errors (fatal problems, or any problem with --strict).
    """
    from busi_lite.io import data as D
    from busi_lite.io.sources import open_source

    directory = directory or os.environ.get(ENV_DATA)
    if not directory:
        fail(f"give the dataset folder or manifest: busi-lite data check DIR_OR_CSV (or set {ENV_DATA})")
    src = open_source(directory)
    ds = src.discover(tuple(classes.split(",")) if classes else CLASSES, require=bool(classes))
    inv = D.inspect(ds)
    inv["source"] = {"kind": src.kind, "path": str(directory), "name": src.name}
    inv["with_box"] = {c: sum(1 for s in ds.samples if s.label == i and s.box is not None)
                       for i, c in enumerate(ds.classes)}
    inv["patients"] = len({s.patient for s in ds.samples if s.patient is not None})
    fatal = [p for p in inv["problems"] if p["fatal"]]
    if not ds.samples and fatal and not as_json:   # a wrong folder: the error, not a page of zero statistics
        for p in fatal:
            click.echo(f"ERROR {p['path']}: {p['what']} -> {p['fix']}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(dump(inv))
    else:
        click.echo(f"dataset {inv['source']['path']} ({inv['source']['kind']} {inv['source']['name']}; "
                   f"files under {inv['root']})")
        for c, n in inv["counts"].items():
            click.echo(f"  {c:10s} {n:5d} images, {inv['with_lesion_mask'][c]:5d} with a lesion mask, "
                       f"{inv['with_box'].get(c, 0):5d} with a manifest box")
        if inv["patients"]:
            click.echo(f"  patients named: {inv['patients']} (their images share one split group)")
        click.echo(f"  extra masks merged by union: {inv['extra_masks']}")
        click.echo(f"  width  min/median/max: {inv['width']}   height: {inv['height']}")
        dup = inv["duplicate_groups"]
        click.echo(f"duplicate groups (pHash Hamming <= 10 or identical pixels): {len(dup)} groups, "
                   f"{sum(len(g) for g in dup)} images")
        for g in inv["mixed_label_groups"]:
            click.echo(f"  MIXED LABELS, kept out of training and evaluation: {', '.join(g)}")
        for n in inv["notes"]:
            click.echo(f"note: {n}")
        click.echo(f"problems: {len(inv['problems'])}")
        for p in inv["problems"]:
            click.echo(f"  {'ERROR' if p['fatal'] or strict else 'warning'} {p['path']}: {p['what']} -> {p['fix']}")
    if sheet:
        from busi_lite.report.sheet import duplicate_sheet

        mixed = inv["mixed_label_groups"]
        rest = [g for g in inv["duplicate_groups"] if g not in mixed]
        log(f"wrote {duplicate_sheet(inv['root'], mixed + rest, sheet)}")
    errors = [p for p in inv["problems"] if p["fatal"] or strict]
    sys.exit(1 if errors else 0)


# ---------------------------------------------------------------- extract
def _refuse_another_root(cache: Path, data_dir) -> None:
    """The default cache is not silently replaced by another dataset's features."""
    if not Path(cache).is_file():
        return
    try:
        import h5py

        with h5py.File(cache, "r") as f:
            built = {str(f.attrs.get(k)) for k in ("dataset_source", "dataset_root") if f.attrs.get(k)}
    except (OSError, ImportError):
        return                       # unreadable: extract itself names the problem
    if built and str(Path(data_dir).resolve()) not in built:
        fail(f"{cache} holds the features of {min(built)}, not of {data_dir} -> give --out for this "
             "dataset's cache (e.g. cache/NAME_features.h5), or --force to replace it")


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), envvar=ENV_DATA,
              help=f"BUSI folder with normal/ benign/ malignant/, or a CSV manifest file,label[,patient]"
                   f"[,x0,y0,x1,y1] (paths relative to the CSV; boxes make the box views) (or ${ENV_DATA}).")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX backbone (default $BUSI_LITE_BACKBONE, then the shipped one).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), envvar="BUSI_LITE_CACHE",
              help="HDF5 cache to write (default cache/busi_features.h5 for v1, cache/busi_features_v2.h5 "
                   "for v2).")
@click.option("--preprocess", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
              help="Preprocessing: v1 = Teachable Machine's, v2 = grey 1-99 % contrast stretch.")
@click.option("--views", type=CommaList(ALL_VIEWS, name="VIEWS"), default=",".join(ALL_VIEWS),
              help="Views besides raw ('' for none). Default all: mask-fused roi,masked,mask; flip (every image); "
                   "lesion-box box,box_flip, jittered training boxes box_j0,box_j1 (+_flip), sloppy evaluation "
                   "boxes box_s10,box_s20,box_s30 (images with a mask).")
@click.option("--force", is_flag=True, help="Re-extract everything (also needed after a backbone change).")
@click.option("--strict", is_flag=True, help="Abort on the first bad file instead of skipping it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(data_dir, backbone, out, preprocess, views, force, strict, as_json):
    """Backbone pass once: image features -> HDF5 cache.

    Features of every image and its mask views go to the HDF5 cache.
    Incremental: unchanged images are reused; a different backbone or
    preprocessing version is refused unless --force. The old cache stays intact
    until the new one is complete. All views cost about 2-3x raw alone: BUSI's
    780 images with all 14 views took 42 s (raw + the 3 mask-fused views 19 s)
    on a quiet 2-core machine (README, "Speed and memory"); a busy machine takes
    several times longer. When stderr is not a terminal a progress line is
    printed every 5 s.
    """
    from busi_lite.features.cache import default_cache
    from busi_lite.features.cache import extract as run
    from busi_lite.io import data as D

    if not data_dir:
        fail(f"give the dataset folder: --data DIR (or set {ENV_DATA})")
    views = tuple(views)
    if out is None and not force:
        _refuse_another_root(default_cache(preprocess), data_dir)
    out = out or default_cache(preprocess)
    try:
        s = run(data_dir, out, backbone, views=views, force=force, strict=strict, log=log, preprocess=preprocess)
    except D.DatasetError as e:  # the dataset folder came from --data / $BUSI_LITE_DATA
        e.param = e.param or "data"
        raise
    if as_json:
        click.echo(dump(s))
    else:
        rate = s["extracted"] / s["seconds"] if s["seconds"] else 0
        click.echo(f"{s['cache']}: {s['images']} images ({', '.join(f'{k} {v}' for k, v in s['counts'].items())}); "
                   f"extracted {s['extracted']}, reused {s['reused']}, skipped {len(s['problems'])} problem(s); "
                   f"{s['seconds']:.1f}s ({rate:.0f} images/s)")
    if s["problems"]:
        sys.exit(1 if strict else 0)
