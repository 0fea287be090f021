"""busi-lite: breast-ultrasound triage on a laptop CPU.

Data flow: data (discover, validate, group, split) -> backbone (ONNX MobileNetV2)
-> features (HDF5 cache) -> head (NumPy MLP / multi-task, Adam) -> experiments
-> predict (labels, lesion map, safety flags) -> report.

Python API: :func:`predict` (below); for many calls, :class:`busi_lite.inference.Predictor`
loads the model and the backbone once.
"""

from __future__ import annotations

__version__ = "0.1.0"

CLASSES = ("normal", "benign", "malignant")


def predict(paths, model=None, backbone=None, threshold_malignant: float | None = None, flags=None,
            overlay_dir=None) -> list:
    """Classify breast-ultrasound images.

    Parameters
    ----------
    paths : str | Path | list of them
        Image files (PNG, JPEG, BMP, TIFF) and/or folders (their image files, sorted,
        not recursive, lesion masks ``*_mask*`` skipped).
    model : str | Path | busi_lite.model.Model | None
        Model stem ``NAME`` (``NAME.npz`` + ``NAME.json``); default ``$BUSI_LITE_MODEL``,
        then the shipped default model.
    backbone : str | Path | busi_lite.backbone.Backbone | None
        ONNX backbone; default ``$BUSI_LITE_BACKBONE``, then the shipped one. It must be
        the backbone the model was trained on (checked by SHA-256).
    threshold_malignant : float in [0, 1] | None
        p(malignant) at or above which ``malignant_alert`` is set; default: the model's
        operating point (chosen on training data for high sensitivity).
    flags : busi_lite.flags.FlagConfig | None
        Which safety flags to raise and threshold overrides; default: all, calibrated.
    overlay_dir : str | Path | None
        When given, write ``<stem>_overlay.png`` per image there.

    Returns
    -------
    list[busi_lite.inference.Prediction]
        One per image, in argument order. ``ok`` is False (with ``error``) for an image
        that could not be read; the others are still predicted. ``proba`` maps class ->
        probability, ``label`` is the most probable class, ``flags`` lists safety flags
        with reasons; ``to_dict()`` gives JSON-ready data.

    Example
    -------
    >>> import busi_lite
    >>> [p.label for p in busi_lite.predict(["img.png"])]  # doctest: +SKIP
    """
    from .flags import FlagConfig
    from .inference import predict_images

    return predict_images(paths, model=model, backbone=backbone, threshold_malignant=threshold_malignant,
                          flags=flags if flags is not None else FlagConfig(), overlay_dir=overlay_dir)
