"""Which model answered, and where its malignant threshold came from: one record per loaded model.

:func:`provenance` fills a :class:`Provenance` once when a model is loaded for serving; every
Prediction refers to it, so the CLI text, JSON/CSV records, overlays, the web page, ``/api/info``
and ``busi-lite info`` all name the same model the same way:

* ``name``: the training configuration's name, ``@SITE`` appended for a site-calibrated model;
* ``digest``: SHA-256 of the whole model as stored, card bytes then weights bytes
  (``cat NAME.json NAME.npz | sha256sum``); two models that differ only in their threshold
  (``calibrate``) have different digests;
* the threshold's origin: ``training`` (chosen on out-of-fold predictions of the training
  images, naming the training sites when the card lists them), ``site`` (``calibrate`` on a site's labelled cases) or ``override`` (a threshold
  given by hand), with the recall it was chosen for and the false-alarm rate measured where it
  was chosen, when known.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ORIGINS = ("training", "site", "override", "none")


@dataclass(frozen=True)
class Provenance:
    """Which model and threshold made a result (see the module docstring)."""
    name: str                          # config name, '@SITE' when site-calibrated
    digest: str | None                 # SHA-256 of NAME.json + NAME.npz bytes (None: model without a card)
    path: str | None                   # model stem NAME, None for a model passed as an object
    source: str | None                 # option | environment | packaged | object
    malignant_threshold: float | None
    threshold_origin: str              # training | site | override | none
    target_recall: float | None        # malignant recall the threshold was chosen to reach
    false_alarm_rate: float | None     # share of non-malignant cases at/above it where it was chosen
    site: str | None = None            # site-calibrated: the site's name
    site_cases: int | None = None      # ... its labelled cases and their malignant ones
    site_malignant: int | None = None
    training_images: int | None = None
    training_sites: tuple = ()         # the card's training sources by name (empty: not named on the card)

    @property
    def short_digest(self) -> str:
        return (self.digest or "-")[:12]

    @property
    def threshold_source(self) -> str:
        """Where the threshold came from, in words."""
        if self.threshold_origin == "site":
            return (f"calibrated on site {self.site} ({self.site_cases} cases, {self.site_malignant} malignant; "
                    "in-sample)")
        if self.threshold_origin == "training":
            n = f"{self.training_images} " if self.training_images else ""
            sites = f" ({', '.join(self.training_sites)})" if self.training_sites else ""
            return f"chosen on out-of-fold predictions of the {n}training images{sites}"
        if self.threshold_origin == "override":
            return "set by hand (--threshold-malignant); its recall and false-alarm rate are unknown"
        return "this model has no malignant threshold"

    def performance_parts(self) -> list[str]:
        """['set to catch 95 % of cancers;', 'it also fires on about 45 % of non-malignant cases'] when
        known (where the threshold was chosen), else []."""
        if self.target_recall is None:
            return []
        parts = [f"set to catch {100 * self.target_recall:.0f} % of cancers"]
        if self.false_alarm_rate is not None:
            parts[0] += ";"
            parts.append(f"it also fires on about {100 * self.false_alarm_rate:.0f} % of non-malignant cases")
        return parts

    def describe(self) -> str:
        """One line: 'model NAME (digest 1a2b3c4d5e6f); threshold 0.074 chosen on ...'."""
        t = "no malignant threshold" if self.malignant_threshold is None else \
            f"malignant threshold {self.malignant_threshold:.3f} {self.threshold_source}"
        return f"model {self.name} (digest {self.short_digest}); {t}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["training_sites"] = list(self.training_sites)   # as JSON gives it back
        d["threshold_source"] = self.threshold_source
        return d


def _finite(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def provenance(model, path: str | None = None, source: str | None = None,
               threshold_override: float | None = None) -> Provenance:
    """The record of a loaded :class:`busi_lite.model.model.Model` (``path``/``source``: where it was
    found); ``threshold_override``: a malignant threshold given by hand instead of the model's."""
    card = model.card
    if card is None:
        return Provenance("bare head", None, path, source, threshold_override,
                          "override" if threshold_override is not None else "none", None, None)
    cal, site = card.calibration, card.site
    name = card.config.name + (f"@{site.site}" if site is not None else "")
    sites = tuple(s.name for s in card.sources or ())
    if not sites and card.shift is not None:     # a card with site-shift statistics names them
        sites = tuple(s.name for s in card.shift.sites)
    common = dict(name=name, digest=model.digest, path=path, source=source,
                  training_images=card.split.n_train_images, training_sites=sites)
    if threshold_override is not None:
        return Provenance(malignant_threshold=float(threshold_override), threshold_origin="override",
                          target_recall=None, false_alarm_rate=None, **common)
    if cal.malignant_threshold is None:
        return Provenance(malignant_threshold=None, threshold_origin="none", target_recall=None,
                          false_alarm_rate=None, **common)
    if site is not None:
        return Provenance(malignant_threshold=float(cal.malignant_threshold), threshold_origin="site",
                          target_recall=float(site.target_recall), false_alarm_rate=_finite(site.far),
                          site=site.site, site_cases=site.n_cases, site_malignant=site.n_malignant, **common)
    return Provenance(malignant_threshold=float(cal.malignant_threshold), threshold_origin="training",
                      target_recall=_finite(cal.target_recall), false_alarm_rate=_finite(cal.oof_far_at_threshold),
                      **common)
