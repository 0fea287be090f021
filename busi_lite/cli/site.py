"""CLI for another site: ``evaluate --data DIR`` (its implementation) and ``calibrate``.

``evaluate --data DIR`` evaluates a model on EVERY image of a labelled folder
(busi_lite.evaluation.external); ``calibrate`` re-chooses the malignant threshold on a site's
labelled cases and saves a NEW model (busi_lite.evaluation.sitecal). Both find or build the
folder's feature cache (default ``cache/<folder name>_features.h5``).
"""

from __future__ import annotations

from pathlib import Path

import click

from busi_lite.cli.common import FiniteFloatRange, dump, log
from busi_lite.cli.tables import external_table


def evaluate_folder(model, data_dir, cache, backbone, threshold_malignant, flags, as_json, csv_path, per_image,
                    site=None):
    """Implementation of ``busi-lite evaluate --data DIR`` (called by cli.predict.evaluate)."""
    from busi_lite.common.atomic import write_text
    from busi_lite.evaluation.external import csv_text, ensure_cache, evaluate_external
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.model import Model
    from busi_lite.model.provenance import provenance
    from busi_lite.serving.advice import site_status

    m = Model.load(model)
    st = site_status(provenance(m, None, None, threshold_malignant), site)   # checked before any extraction
    path = ensure_cache(data_dir, cache, backbone, log=log, progress=True, preprocess=m.card.preprocess_version,
                        views=("flip",) if m.flip else ())  # only what the model reads
    with FeatureCache(path) as fc:
        ev = evaluate_external(m, fc, threshold_malignant=threshold_malignant, flag_config=flags,
                               data_root=Path(data_dir), per_image=True)
    from busi_lite.serving.shift import SHIFT_WARNING

    if st.name is not None:
        ev.notes.append(f"{st.reason}: these figures are not zero-shot there" if st.validated else
                        f"{st.reason}: if the images do come from {st.name}, these figures are zero-shot there")
    if SHIFT_WARNING in ev.notes:
        log(f"WARNING: {SHIFT_WARNING}")
    if csv_path is not None:
        write_text(csv_path, csv_text(ev))
        log(f"wrote {csv_path} ({ev.n} rows)")
    if as_json:
        if not per_image:
            ev.per_image = None
        click.echo(dump(ev))
    else:
        click.echo(external_table(ev))


@click.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model stem NAME to calibrate (default $BUSI_LITE_MODEL, then the shipped model).")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="The site's labelled cases: a folder (BUSI layout, any subset of the classes) or a CSV manifest "
                   "file,label[,patient][,x0,y0,x1,y1].")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path),
              help="The folder's feature cache (default cache/<folder name>_features.h5; extracted when missing).")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX backbone for extraction (default $BUSI_LITE_BACKBONE, then the packaged one).")
@click.option("--target-recall", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="Malignant recall the threshold must reach on the site's cases.")
@click.option("--name", "site", default=None, help="Site name recorded in the card (default: the folder's name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Stem of the NEW model (default: <model>_site-<name> beside the model; models/ for the shipped one); never overwritten.")
@click.option("--json", "as_json", is_flag=True, help="Print the site calibration record as JSON.")
def calibrate(model, data_dir, cache, backbone, target_recall, site, out, as_json):
    """Set the malignant threshold on a site's cases; new model.

    The threshold is the highest one whose malignant recall on the site's
    labelled cases reaches --target-recall. The new model is the same model (same weights) with
    this threshold, the site, its case counts and the recall/FAR reached (Wilson
    95 % intervals) in its card. A warning is printed and stored when there are
    too few malignant cases to promise the target (fewer than 30, or the Wilson
    lower bound of the recall below target - 0.05).
    """
    from busi_lite.common.resources import resolve
    from busi_lite.evaluation.external import ensure_cache
    from busi_lite.evaluation.sitecal import calibrate_on_cache, calibrated_model, default_out, save_new_model
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.model import ENV_MODEL, Model
    from busi_lite.model.provenance import provenance

    site = site or Path(data_dir).resolve().name
    m = Model.load(model)
    dest = out if out is not None else default_out(_local_stem(resolve("model", model)), site)
    path = ensure_cache(data_dir, cache, backbone, log=log, progress=True, preprocess=m.card.preprocess_version,
                        views=("flip",) if m.flip else ())  # only what the model reads
    with FeatureCache(path) as fc:
        sc = calibrate_on_cache(m, fc, target_recall, site, Path(data_dir))
    npz, js = save_new_model(calibrated_model(m, sc), dest)
    if as_json:
        click.echo(dump(sc))
    else:
        click.echo(f"site {sc.site}: {sc.n_cases} cases, {sc.n_malignant} malignant")
        click.echo(f"malignant threshold {sc.threshold:.5f} (was {sc.previous_threshold:.5f}, chosen for recall "
                   f"{sc.previous_target_recall:.2f} on the training site)")
        click.echo(f"on the site's cases: recall {sc.recall:.3f} [{sc.recall_lo:.3f}, {sc.recall_hi:.3f}], "
                   f"FAR {sc.far:.3f} [{sc.far_lo:.3f}, {sc.far_hi:.3f}] (Wilson 95 %; in-sample)")
        click.echo(f"saved the new model {npz.with_suffix('')} ({npz.name} + {js.name})")
        pv = provenance(Model.load(npz.with_suffix("")))
        click.echo(f"its results will name it: model {pv.name} (digest {pv.short_digest}); threshold "
                   f"{pv.threshold_source}")
        click.echo(f"use it with --model {npz.with_suffix('')} or {ENV_MODEL}={npz.with_suffix('')}")
    if sc.warning:
        log(f"WARNING: {sc.warning}")


def _local_stem(resolved) -> Path:
    """Where a new model goes by default: beside the model, or ./models for the packaged one
    (where train and select write too; never inside the installed package)."""
    return Path("models") / resolved.path.name if resolved.source == "packaged" else resolved.path
