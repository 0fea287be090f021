"""Site calibration: choose the malignant threshold on a new site's labelled cases.

A model's operating point is chosen on its training site; at another hospital the
same threshold gives another recall. ``fit_site_calibration`` chooses it again on
the site's own labelled cases and ``calibrated_model`` returns a copy of the model
whose card carries it; ``save_new_model`` writes that copy and never overwrites.

Rule (fixed in advance, before any site result was looked at):

- threshold: the HIGHEST t whose recall on the site's malignant cases,
  recall(p_malignant >= t), reaches ``target_recall`` (metrics.threshold_for_recall);
- the recall and FAR reached on those same cases are recorded with Wilson 95 %
  intervals (in-sample: the recall is >= target by construction);
- WARNING when there are too few malignant cases to promise the target: fewer than
  ``MIN_MALIGNANT`` (30) malignant cases, or the Wilson 95 % lower bound of the recall
  reached is below ``target_recall - MARGIN`` (0.05). The warning is stored in the
  record (and the CLI prints it).

Only the card changes: ``calibration.malignant_threshold`` and ``target_recall`` take
the site's values, ``calibration.oof_far_at_threshold`` becomes NaN (it described the
source threshold), and ``card.site`` records this :class:`SiteCalibration` with the
previous (source) threshold. Head weights and OOD statistics are the same arrays; the
model's own save API writes them (and the weights' hash).

The record :class:`SiteCalibration` lives with the other records (model/records.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from busi_lite.common.errors import BusiError
from busi_lite.evaluation import metrics as M
from busi_lite.model.records import SiteCalibration

MIN_MALIGNANT = 30
MARGIN = 0.05
NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,79}")


class SiteError(BusiError):
    """Site calibration cannot be done as asked: what -> fix."""


def check_site_name(site) -> str:
    if not isinstance(site, str) or not NAME_RE.fullmatch(site):
        raise SiteError(f"site name {site!r} is not a plain name (letters, digits and . _ + -, up to 80)",
                        "give a short name such as 'hospital-b'", param="site")
    return site


def check_target(target_recall) -> float:
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or \
            not 0 < target_recall < 1:
        raise SiteError(f"target_recall must be within (0, 1), got {target_recall!r}", "give e.g. 0.9",
                        param="target_recall")
    return float(target_recall)


RULE = (f"highest threshold with recall >= target on the site's malignant cases; warn when < {MIN_MALIGNANT} "
        f"malignant cases or the Wilson 95 % lower bound of the recall reached < target - {MARGIN}")


def choose_threshold(y_mal, p_mal, target_recall: float) -> float:
    """y_mal [N] bool (truly malignant), p_mal [N] p(malignant) -> the highest threshold reaching
    ``target_recall`` on the malignant cases (nan when there are none)."""
    return M.threshold_for_recall(np.asarray(y_mal, bool), np.asarray(p_mal, np.float64), check_target(target_recall))


def fit_site_calibration(y_mal, p_mal, target_recall: float, site: str, previous_threshold: float,
                         previous_target_recall: float, data_root=None) -> SiteCalibration:
    """The site's threshold and what it reaches on the site's cases (see the module docstring).

    y_mal [N] bool, p_mal [N] float: truth and the model's p(malignant) on the site's cases."""
    site, target = check_site_name(site), check_target(target_recall)
    y = np.asarray(y_mal, bool)
    p = np.asarray(p_mal, np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise SiteError(f"y_mal and p_mal must be [N] of one length, got {y.shape} and {p.shape}", "pass one per case")
    n_mal = int(y.sum())
    if n_mal == 0 or n_mal == len(y):
        raise SiteError(f"the site's cases hold {n_mal} malignant of {len(y)}: a threshold needs malignant and "
                        "non-malignant cases", "add labelled cases of both kinds", param="data")
    t = choose_threshold(y, p, target)
    alert = p >= t
    tp, fp = int((alert & y).sum()), int((alert & ~y).sum())
    rlo, rhi = M.wilson_interval(tp, n_mal)
    flo, fhi = M.wilson_interval(fp, int((~y).sum()))
    recall, far = tp / n_mal, fp / int((~y).sum())
    warning = None
    if n_mal < MIN_MALIGNANT or rlo < target - MARGIN:
        warning = (f"{n_mal} malignant case(s) are too few to promise recall {target:.2f} +- {MARGIN} on new cases of "
                   f"this site: the recall reached on them is {recall:.3f} (Wilson 95 % {rlo:.3f}-{rhi:.3f}); "
                   "label more malignant cases and calibrate again")
    return SiteCalibration(site=site, n_cases=len(y), n_malignant=n_mal, target_recall=target, threshold=float(t),
                           recall=recall, recall_lo=rlo, recall_hi=rhi, far=far, far_lo=flo, far_hi=fhi,
                           previous_threshold=float(previous_threshold),
                           previous_target_recall=float(previous_target_recall), rule=RULE, warning=warning,
                           data_root=None if data_root is None else str(data_root))


def calibrate_on_cache(model, cache, target_recall: float, site: str, data_root=None) -> SiteCalibration:
    """Site calibration from a site's feature cache (every image; the model's training cache is refused)."""
    from busi_lite.evaluation.external import MALIGNANT, check_not_training, predict_cache

    check_not_training(model, cache)
    pr = predict_cache(model, cache)
    mal = list(model.classes).index(MALIGNANT)
    cal = model.card.calibration
    return fit_site_calibration(pr.y == mal, pr.proba[:, mal], target_recall, site, cal.malignant_threshold,
                                cal.target_recall, data_root)


def calibrated_model(model, sc: SiteCalibration):
    """A new Model (same head, OOD and box-head objects) whose card uses the site's threshold and records ``sc``."""
    card = model.card
    cal = replace(card.calibration, malignant_threshold=sc.threshold, target_recall=sc.target_recall,
                  oof_far_at_threshold=math.nan)
    return replace(model, card=replace(card, calibration=cal, site=sc))


def default_out(model_path, site: str) -> Path:
    """<model folder>/<model name>_site-<site> (the stem of NAME.npz + NAME.json)."""
    p = Path(model_path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(f"{p.name}_site-{check_site_name(site)}")


def save_new_model(model, out) -> tuple[Path, Path]:
    """Save ``model`` as OUT.npz + OUT.json; refused when either file exists (never overwrites)."""
    p = Path(out)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    existing = [q for q in (p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")) if q.exists()]
    if existing:
        raise SiteError(f"{existing[0]} exists: a site-calibrated model is saved as a NEW model, never over "
                        "an existing file", "choose another output name or remove the old files yourself", param="out")
    p.parent.mkdir(parents=True, exist_ok=True)
    return model.save(p)
