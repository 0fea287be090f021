"""The paper's reference numbers (Table 1/2), used by sweeps, reports and the CLI.

PAPER[name] = (hyper-parameters, (malignant accuracy, recall %, FAR %, precision %)).
Reference data only: no training code here, so serving and reports may import it.
"""

from __future__ import annotations

PAPER = {
    "model-1": (dict(lr=1e-3, batch=32, epochs=30), (0.50, 50.0, 1.2, 94.1)),
    "model-2": (dict(lr=1e-3, batch=16, epochs=50), (0.72, 71.9, 7.0, 79.3)),
    "model-3": (dict(lr=1e-3, batch=32, epochs=50), (0.72, 71.9, 4.7, 80.6)),
    "model-4": (dict(lr=1e-3, batch=32, epochs=70), (0.81, 81.25, 8.14, 78.79)),
    "model-5": (dict(lr=1e-4, batch=32, epochs=30), (0.66, 65.6, 7.0, 77.8)),
    "model-6": (dict(lr=1e-4, batch=16, epochs=50), (0.81, 81.3, 5.9, 83.9)),
    "model-6p": (dict(lr=1e-4, batch=16, epochs=50, masks=True), (0.81, 81.3, 1.7, 94.5)),
    "model-7": (dict(lr=1e-4, batch=32, epochs=50), (0.84, 84.4, 5.8, 84.4)),
    "model-7p": (dict(lr=1e-4, batch=32, epochs=50, masks=True), (0.91, 89.7, 3.2, 87.9)),
    "model-7pp": (dict(lr=1e-4, batch=32, epochs=50, masks=True, balance="undersample"), (0.93, 95.6, 3.4, 95.6)),
    "model-8": (dict(lr=1e-4, batch=32, epochs=70), (0.59, 59.38, 4.65, 82.61)),
    "model-9": (dict(lr=5e-5, batch=32, epochs=50), (0.63, 62.5, 8.14, 74.1)),
}


def paper_figures(base: str | None) -> dict | None:
    """The paper's malignant figures of its model ``base`` (a grid config's ``base``), as rates."""
    if base not in PAPER:
        return None
    acc, rec, far, prec = PAPER[base][1]
    return {"malignant_accuracy": acc, "malignant_recall": rec / 100, "malignant_far": far / 100,
            "malignant_precision": prec / 100}
