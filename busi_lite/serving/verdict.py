"""The words of a result, shared by the CLI, the overlays and the web page (its ``screen``).

One coherent answer per image: the most probable class, then the sensitive screen with its
threshold, what that threshold was set to catch and where it came from, e.g.

  most probable: benign (p 0.46); sensitive screen: REFER - p(malignant) 0.340 is at or above the
  screening threshold 0.074, set to catch 95 % of cancers; it also fires on about 45 % of
  non-malignant cases (the screen is deliberately sensitive: it refers images whose most probable
  class is not malignant too)

A withheld verdict (busi_lite.serving.prediction.Prediction.withhold) reads "VERDICT WITHHELD" with
its reason instead. Every face also carries :data:`NOTICE` and the model's provenance line.
"""

from __future__ import annotations

from busi_lite.serving.prediction import Prediction

NOTICE = "Research tool, not a diagnosis."
SCORE_NAME = "unusual-input score"      # the one name of Prediction.ood_score in every face
WITHHELD = "VERDICT WITHHELD"
WITHHELD_WHY = "no label, screen or lesion map is given for an image unlike the training images"
SHOW_ANYWAY_CLI = "--show-anyway shows it for research use"
SENSITIVE_NOTE = ("the screen is deliberately sensitive: it also refers images whose most probable class "
                  "is not malignant")


def pair(x: float, t: float) -> tuple[str, str]:
    """x and t with the same decimals (3, more when needed) so 'x >= t' / 'x < t' reads true."""
    for nd in (3, 5, 8):
        a, b = f"{x:.{nd}f}", f"{t:.{nd}f}"
        if (float(a) >= float(b)) == (x >= t):
            return a, b
    return repr(x), repr(t)


def label_text(pred: Prediction) -> str:
    """'most probable: normal (p 0.74)'."""
    return f"most probable: {pred.label} (p {pred.proba[pred.label]:.2f})"


def probs_text(pred: Prediction) -> str:
    return "probabilities: " + ", ".join(f"{c} {v:.2f}" for c, v in pred.proba.items())


def screen_parts(pred: Prediction) -> list[str]:
    """The malignant screen as phrases (joined with spaces they read as one sentence)."""
    t = pred.malignant_threshold
    if pred.malignant_alert is None or t is None:
        return ["sensitive screen: none -", "this model has no malignant threshold"]
    pm, pt = pair(pred.proba["malignant"], t)
    if pred.malignant_alert:
        parts = ["sensitive screen: REFER -", f"p(malignant) {pm} is at or above", f"the screening threshold {pt}"]
    else:
        parts = ["sensitive screen: no referral -", f"p(malignant) {pm} is below", f"the screening threshold {pt}"]
    perf = pred.model.performance_parts() if pred.model is not None else []
    if perf:
        parts[-1] += ","
        parts += perf
    if pred.malignant_alert and pred.label != "malignant":
        parts.append(f"({SENSITIVE_NOTE})")
    return parts


def screen_text(pred: Prediction) -> str:
    return " ".join(screen_parts(pred))


def screen_sentence(pred: Prediction) -> str | None:
    """The screen after its headline ('p(malignant) 0.340 is at or above the screening threshold ...'):
    what the web page shows beside "Sensitive screen: REFER"; None without a verdict or a threshold."""
    if not pred.ok or pred.withheld or pred.malignant_alert is None or pred.malignant_threshold is None:
        return None
    return " ".join(screen_parts(pred)[1:])


def answer_parts(pred: Prediction) -> list[str]:
    """The whole answer as phrases: label then screen, or the withheld notice."""
    if pred.withheld:
        return withheld_parts(pred)
    return [label_text(pred) + ";"] + screen_parts(pred)


def answer_text(pred: Prediction) -> str:
    """The whole answer in one sentence (see the module docstring)."""
    if not pred.ok:
        return f"ERROR {pred.error}"
    return " ".join(answer_parts(pred))


def withheld_parts(pred: Prediction, hint: str = SHOW_ANYWAY_CLI) -> list[str]:
    return [f"{WITHHELD} -", f"{pred.withheld}", f"({WITHHELD_WHY};", f"{hint})"]


def provenance_text(pred: Prediction) -> str:
    """'model NAME (digest 1a2b3c4d5e6f); malignant threshold 0.074 chosen on ...'."""
    if pred.model is None:
        return "model unknown"
    return pred.model.describe()


def score_text(pred: Prediction) -> str | None:
    return None if pred.ood_score is None else f"{SCORE_NAME} {pred.ood_score:.2f}"
