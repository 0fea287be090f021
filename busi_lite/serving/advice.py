"""Which answer to trust: the lesion-box answer or the whole-image verdict.

The whole-image verdict and its thresholds are validated only where the model was trained
(held-out figures on its card) or calibrated (``calibrate``); the lesion-box answer travels
better to a new hospital. The rule (:func:`answer`), first match wins:

  1. the batch site-shift check fired (busi_lite.serving.shift)            -> box
  2. the image raised ``unusual_input`` (its own OOD score or pixel checks) -> box
  3. the batch check passed (the batch looks like a training site)          -> whole image
  4. the site given (``--site``) is one where the model is validated        -> whole image
  5. otherwise the site is not validated (unknown site, or none given and
     too few images to check it)                                            -> box

"box" needs a box head: a model without one answers with the whole image and says that
answer is not validated there. A site name is validated when it equals (case-insensitively,
trimmed) one of the model's training sources or the site its threshold was calibrated on
(:func:`site_status`). Serving only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from busi_lite.common.errors import ConfigError

BOX, WHOLE = "box", "whole_image"
R_SHIFT = "the batch does not look like any site this model was trained on"
R_UNUSUAL = "this image is unlike the model's training images (unusual_input)"
R_SITE = "the batch looks like a site this model was trained on"
R_NO_BOX = "this model has no lesion-box head"
R_NO_SITE = "no site given"
MAX_SITE = 100   # characters of a site name


def _key(name: str) -> str:
    return name.strip().casefold()


@dataclass(frozen=True)
class SiteStatus:
    """The site the images come from (``name`` as given, trimmed; None = not given) and whether the
    model is validated there: trained on it (``trained_on``: the card's training sites) or calibrated
    there (``calibrated_on``: the site of its site-calibrated threshold, None if none)."""
    name: str | None
    validated: bool
    trained_on: tuple = ()
    calibrated_on: str | None = None

    @property
    def known(self) -> str:
        """'trained on BUSI, BUS-BRA-dev; not calibrated on a site' (what the model is validated on)."""
        trained = f"trained on {', '.join(self.trained_on)}" if self.trained_on else \
            "its training sites are not named on its card"
        return trained + (f"; calibrated on {self.calibrated_on}" if self.calibrated_on else "")

    @property
    def reason(self) -> str:
        """Why the site counts (or not) for the whole-image verdict, in words."""
        if self.name is None:
            return R_NO_SITE
        if not self.validated:
            where = "not calibrated there" if self.calibrated_on is None else f"calibrated on {self.calibrated_on}, not there"
            trained = f"trained on {', '.join(self.trained_on)}" if self.trained_on else "training sites not named"
            return f"this model was never validated on site {self.name} ({trained}; {where})"
        if self.calibrated_on is not None and _key(self.calibrated_on) == _key(self.name):
            return f"the images come from site {self.name}, where this model's threshold was calibrated"
        return f"the images come from site {self.name}, one this model was trained on"

    @property
    def text(self) -> str:
        """One line for a header or a log: 'site BUSI: validated (...)' / 'site not given (...)'."""
        if self.name is None:
            return f"site not given; the model is validated only where it was {self.known}"
        return f"site {self.name}: {'validated' if self.validated else 'NOT validated'} ({self.known})"

    def to_json(self) -> dict:
        return {**asdict(self), "trained_on": list(self.trained_on), "text": self.text, "reason": self.reason}


def site_status(provenance, site: str | None) -> SiteStatus:
    """The :class:`SiteStatus` of ``site`` (a name, or None) for the model of ``provenance``
    (busi_lite.model.provenance.Provenance, or None for a model without one). An empty name is
    "not given"; a known name takes the card's spelling; an unknown name is fine (not validated)."""
    if site is not None and not isinstance(site, str):
        raise ConfigError(f"site must be a site name (text) or None, got {type(site).__name__}",
                          "give e.g. site='BUSI', or None when the images' site is not known", param="site")
    name = (site or "").strip() or None
    if name is not None and (len(name) > MAX_SITE or not name.isprintable()):
        raise ConfigError(f"site name {name[:40]!r}... is not a plain name ({MAX_SITE} printable characters at most)",
                          "give the site's short name, e.g. BUSI", param="site")
    trained = tuple(getattr(provenance, "training_sites", ()) or ())
    calibrated = provenance.site if provenance is not None and provenance.threshold_origin == "site" else None
    known = {_key(s): s for s in (*trained, *([calibrated] if calibrated else []))}
    if name is not None and _key(name) in known:
        return SiteStatus(known[_key(name)], True, trained, calibrated)
    return SiteStatus(name, False, trained, calibrated)


def box_first(has_box: bool, why: str) -> tuple[str, str]:
    """(answer, reason) where the whole-image verdict is not validated: the lesion box, or without
    a box head the whole image, said to be not validated there."""
    return (BOX, why) if has_box else (WHOLE, f"{R_NO_BOX}; {why}: the verdict is not validated here")


def _unchecked(check, site: SiteStatus | None) -> str:
    """Why the site is not validated: the site given is unknown, or none was given and the batch
    could not be checked (``check``: None or a ShiftCheck that did not run)."""
    if site is not None and site.name is not None:
        return site.reason
    if check is None:
        return f"{R_NO_SITE} and the site was not checked"
    if check.batch_min is None:
        return f"{R_NO_SITE} and this model has no site statistics to check the site with"
    return f"{R_NO_SITE} and fewer images than the site check needs ({check.batch_min})"


def answer(has_box: bool, check=None, site: SiteStatus | None = None, unusual: bool = False) -> tuple[str, str]:
    """(answer, reason) by the rule of the module docstring. ``check``: the batch's
    busi_lite.serving.shift.ShiftCheck or None (not run); ``site``: the site given, or None."""
    if check is not None and check.checked and check.shifted:
        said = f" (though the images are said to come from site {site.name})" if site and site.name else ""
        return box_first(has_box, R_SHIFT + said)
    if unusual:
        return box_first(has_box, R_UNUSUAL)
    if check is not None and check.checked:
        like = [s["name"] for s in check.sites if s["statistic"] <= s["threshold"]]
        return WHOLE, R_SITE + (f" ({', '.join(like)})" if like else "")
    if site is not None and site.validated:
        return WHOLE, site.reason
    return box_first(has_box, _unchecked(check, site))


def batch_answer(check, has_box: bool, site: SiteStatus | None = None) -> tuple[str, str] | None:
    """(answer, reason) every usual image of a checked batch gets (the web session's; an image with
    ``unusual_input`` keeps the box); None when the batch was not checked (each image's own stands)."""
    return answer(has_box, check, site) if check.checked else None


def advise(pred, has_box: bool, check=None, site: SiteStatus | None = None) -> None:
    """Set ``pred.recommended`` and ``pred.recommended_reason`` (a successful Prediction)."""
    if pred.ok:
        unusual = any(f.name == "unusual_input" for f in pred.flags)
        pred.recommended, pred.recommended_reason = answer(has_box, check, site, unusual)


def advise_all(preds, has_box: bool, check=None, site: SiteStatus | None = None) -> None:
    """:func:`advise` for every prediction of a batch."""
    for p in preds:
        advise(p, has_box, check, site)
