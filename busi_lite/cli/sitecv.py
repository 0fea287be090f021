"""CLI verb `site-cv`: cross-validated figures of training on a site's own cases, and the
learning curve (``--curve``): how many site cases are needed."""

from __future__ import annotations

from pathlib import Path

import click

from busi_lite.cli.common import FiniteFloatRange, dump, log
from busi_lite.cli.options import CommaList, config_options, make_config


def curve_size(text: str):
    """'all' -> None, else a whole number >= 2."""
    if text.lower() == "all":
        return None
    v = int(text)
    if v < 2:
        raise ValueError("a number of site cases must be >= 2 (or 'all')")
    return v


def curve_table(curve) -> str:
    head = (f"{'mode':5s} {'site cases':>10s} {'AUC [95 %]':>22s} {'seed sd':>7s} "
            f"{'recall [95 %]':>20s} {'FAR [95 %]':>20s}")
    lines = [head]
    for p in curve.points:
        lines.append(f"{p.mode:5s} {p.site_cases:10d} {p.auc:8.3f} [{p.auc_lo:.3f}, {p.auc_hi:.3f}] "
                     f"{p.auc_seed_sd:7.3f} {p.recall:6.3f} [{p.recall_lo:.2f}, {p.recall_hi:.2f}] "
                     f"{p.far:6.3f} [{p.far_lo:.2f}, {p.far_hi:.2f}]")
    return "\n".join(lines)


@click.command("site-cv")
@config_options
@click.option("--data", "data", type=click.Path(exists=True, path_type=Path),
              help="The site's labelled dataset: a folder (benign/ malignant/ ...) or a CSV manifest "
                   "file,label[,patient][,x0,y0,x1,y1]; its features are extracted once unless --site-cache is given.")
@click.option("--site-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Feature cache of the site's labelled dataset (extract --data SITE --out ...).")
@click.option("--busi-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Also train on BUSI's training split from this cache (same preprocessing).")
@click.option("--site-cases", type=click.IntRange(min=1), default=None,
              help="At most this many site images in each training fold (stratified), e.g. 200.")
@click.option("--balance-sites/--no-balance-sites", default=True, show_default=True,
              help="With --busi-cache: weight both sites equally in total.")
@click.option("--k", type=click.IntRange(min=2), default=5, show_default=True, help="Folds over the site's images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fold seed (and BUSI's split seed).")
@click.option("--curve", type=CommaList(item=curve_size, name="SIZES"), default=None,
              help="Learning curve: numbers of site cases, e.g. 25,50,100,200,all. Each size is repeated "
                   "over --seeds fold seeds; the threshold is calibrated on the training cases of each fold.")
@click.option("--curve-modes", type=CommaList(["whole", "box"], name="MODES"), default="whole,box", show_default=True,
              help="With --curve: whole image (the config's head) and/or lesion-box mode (the box head).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --curve: fold seeds 0..N-1 per size.")
@click.option("--target-recall", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.90,
              show_default=True, help="With --curve: recall the site-calibrated threshold aims at.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="With --curve: write OUT.json and the figure OUT.png (report --site-curve OUT.json shows it).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def site_cv(data, site_cache, busi_cache, site_cases, balance_sites, k, seed, curve, curve_modes, seeds, target_recall,
            out, as_json, **recipe):
    """Cross-validated figures of training on a site's own cases.

    Group-aware k-fold over the site's images: each fold's head trains on the
    other folds (alone, or with BUSI's training split via --busi-cache) and
    predicts the held-out fold. Prints the out-of-fold malignant AUC with a
    bootstrap 95 % interval and recall/FAR at argmax; with BUSI also the BUSI
    test AUC of the mixed head. Saves no model (`train --data` does).

    With --curve 25,50,100,200,all: the same for each number of site cases,
    in whole-image and lesion-box mode, with recall/FAR at a threshold
    calibrated on each fold's training cases only; ends with one sentence.
    """
    from dataclasses import replace

    from busi_lite.common.errors import BusiError
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.config import default_name
    from busi_lite.training.site import site_cv as run

    if bool(data) == bool(site_cache):
        raise BusiError("give the site's data: --data DIR_OR_CSV or --site-cache CACHE (one of them)",
                        "e.g. --data hospital/cases.csv", param="data")
    config = make_config("custom", recipe)
    config = replace(config, name=default_name(config, seed))
    if data:
        from busi_lite.cli.sources import source_cache
        from busi_lite.io.sources import open_source

        site = source_cache(open_source(data), None, config.preprocess, log)
    else:
        site = FeatureCache(site_cache)
    busi = FeatureCache(busi_cache) if busi_cache else None
    try:
        if curve:
            return _curve(site, config, curve, curve_modes, seeds, k, busi, seed, target_recall, balance_sites, out,
                          as_json)
        r = run(site, config, k, seed, busi=busi, busi_seed=seed, site_cases=site_cases, balance_sites=balance_sites)
    finally:
        site.close()
        if busi is not None:
            busi.close()
    if as_json:
        click.echo(dump(r.to_json()))
        return
    click.echo(f"{r.mode}, {r.k}-fold over {r.n} site images ({r.n_malignant} malignant), "
               f"{r.n_train_mean:.0f} training images a fold: out-of-fold malignant AUC {r.auc:.3f} "
               f"[{r.auc_lo:.3f}, {r.auc_hi:.3f}] (bootstrap 95 %); argmax recall {r.recall:.3f}, FAR {r.far:.3f}")
    if r.busi_test_auc is not None:
        click.echo(f"BUSI test split {seed} (head trained on BUSI training + the site images): "
                   f"AUC {r.busi_test_auc:.3f}")


def _curve(site, config, sizes, modes, seeds, k, busi, seed, target_recall, balance_sites, out, as_json):
    from busi_lite.training.curve import learning_curve

    c = learning_curve(site, config, sizes=sizes, seeds=tuple(range(seeds)), k=k, modes=tuple(modes), busi=busi,
                       busi_seed=seed, target_recall=target_recall, balance_sites=balance_sites, log=log)
    if out:
        dump(c.to_json(), f"{out}.json")
        try:
            from busi_lite.report.site_curve import fig_site_curve

            fig = fig_site_curve(c.to_json())
            fig.savefig(f"{out}.png", dpi=110, bbox_inches="tight")
            log(f"wrote {out}.json and {out}.png")
        except ImportError:
            log(f"wrote {out}.json (no figure: matplotlib is not installed)")
    if as_json:
        click.echo(dump(c.to_json()))
        return
    click.echo(f"site {c.site}: {k}-fold, {seeds} seed(s), threshold for recall {target_recall:g} on each fold's "
               f"training cases ({c.inner}-fold inner)")
    click.echo(curve_table(c))
    click.echo(c.sentence()[0].upper() + c.sentence()[1:])
