"""CLI verb ``train-box``: add a lesion-box head to a trained model (lesion-box mode).

The box head (busi_lite.heads.box) is trained on the training lesion images of the model's
own split (busi_lite.training.box), from a cache holding the box views; the result is a
NEW model (the input model is never overwritten). Predict with it: ``predict --box``.
"""

from __future__ import annotations

from pathlib import Path

import click

from busi_lite.cli.common import FiniteFloatRange, log
from busi_lite.cli.options import params_options
from busi_lite.heads.box import BoxParams


@click.command("train-box", short_help="Add a lesion-box head to a model (predict --box).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model stem NAME to add the box head to (default $BUSI_LITE_MODEL or the packaged default).")
@click.option("--cache", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The model's feature cache, extracted WITH the box views (extract --views "
                   "flip,box,box_flip,box_j0,box_j1,box_j0_flip,box_j1_flip,box_s10,box_s20,box_s30).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Stem of the NEW model (NAME.npz + NAME.json).")
@params_options(BoxParams)
@click.option("--target-recall", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Box-mode malignant threshold: this recall on out-of-fold training predictions.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Out-of-fold folds.")
@click.option("--mirror", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Average with the mirrored image and crop at prediction (2 more backbone passes); auto: only "
                   "when it raises the out-of-fold AUC by >= 0.005.")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists (never the input model).")
def train_box(model, cache, out, C, target_recall, folds, mirror, force):
    """Add a lesion-box head to a trained model and save it as a new model.

    The head answers benign vs malignant from [whole-image features, lesion-crop
    features] (the box plus 30 % margin, resized to the backbone's input size). It is trained on the
    jittered mask boxes of the model's TRAINING lesion images, its threshold chosen
    out of fold for --target-recall, and it is evaluated on the held-out lesion
    images with the true and sloppy boxes (printed, and kept in the card's 'box').
    """
    from busi_lite.common.resources import resolve
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.model import Model, model_paths
    from busi_lite.training.box import add_box_head

    src = model_paths(resolve("model", model).path)[0]
    dst = model_paths(out)[0]
    if dst.resolve() == src.resolve():
        raise click.BadParameter("--out is the input model; give a new name", param_hint="--out")
    if (dst.exists() or dst.with_suffix(".json").exists()) and not force:
        raise click.BadParameter(f"{dst.with_suffix('')} exists; give another name or --force", param_hint="--out")
    m = Model.load(model)
    with FeatureCache(cache) as fc:
        m2 = add_box_head(m, fc, C=C, folds=folds, target_recall=target_recall, flip={"auto": "auto", "yes": True, "no": False}[mirror], log=log)
    npz, js = m2.save(out)
    log(f"saved {npz} and {js}; predict with: busi-lite predict --model {out} IMAGE --box X0,Y0,X1,Y1")
