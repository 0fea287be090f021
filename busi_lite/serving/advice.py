"""Which answer to trust: the lesion-box answer or the whole-image verdict.

The whole-image verdict and its thresholds are tuned to the sites the model was trained
on; the lesion-box answer travels better to a new hospital. So the box answer is the
recommended one when the image (or its batch) does not look like a training site:
  - the batch site-shift check fired (busi_lite.serving.shift), or
  - the image raised ``unusual_input`` (its own OOD score or pixel checks).
Otherwise the whole-image verdict is recommended; without a batch check (fewer images than
the check needs) the reason says the site could not be checked. A model without a box head
always answers with the whole image, and says when that answer is not validated here.
Serving only.
"""

from __future__ import annotations

BOX, WHOLE = "box", "whole_image"
R_SHIFT = "the batch does not look like any site this model was trained on"
R_UNUSUAL = "this image is unlike the model's training images (unusual_input)"
R_SITE = "the batch looks like a site this model was trained on"
R_UNCHECKED = ("the site could not be checked (fewer images than the batch check needs); "
               "at a hospital the model was not trained on, prefer the lesion box")
R_NO_BOX = "this model has no lesion-box head"
R_NO_STATS = "this model has no site statistics to check the site with; at a new hospital prefer the lesion box"


def box_first(has_box: bool, why: str) -> tuple[str, str]:
    """(answer, reason) for an image or batch unlike the training sites: the lesion box, or
    without a box head the whole image, said to be not validated there."""
    return (BOX, why) if has_box else (WHOLE, f"{R_NO_BOX}; {why}: the verdict is not validated here")


def batch_answer(check, has_box: bool) -> tuple[str, str] | None:
    """(answer, reason) every image of a batch gets from its site check alone (the web session's):
    box first when the batch is shifted; None otherwise (each image's own advice stands)."""
    return box_first(has_box, R_SHIFT) if check.checked and check.shifted else None


def advise(pred, has_box: bool, check=None) -> None:
    """Set ``pred.recommended`` and ``pred.recommended_reason`` (a successful Prediction).
    ``check``: the batch's :class:`busi_lite.serving.shift.ShiftCheck`, or None (not run)."""
    if not pred.ok:
        return
    shifted = check is not None and check.checked and check.shifted
    unusual = any(f.name == "unusual_input" for f in pred.flags)
    if shifted or unusual:
        pred.recommended, pred.recommended_reason = box_first(has_box, R_SHIFT if shifted else R_UNUSUAL)
        return
    if check is not None and check.checked:
        why = R_SITE
    elif check is not None and check.reason.startswith("this model has no"):
        why = R_NO_STATS
    else:
        why = R_UNCHECKED
    pred.recommended, pred.recommended_reason = WHOLE, why if has_box or why == R_SITE else f"{R_NO_BOX}; {why}"


def advise_all(preds, has_box: bool, check=None) -> None:
    """:func:`advise` for every prediction of a batch."""
    for p in preds:
        advise(p, has_box, check)
