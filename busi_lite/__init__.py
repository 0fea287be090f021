"""busi-lite: breast-ultrasound triage on a laptop CPU.

Data flow: data (discover, validate, group, split) -> backbone (ONNX MobileNetV2)
-> features (HDF5 cache) -> head (NumPy MLP / multi-task, Adam) -> experiments
-> predict (labels, lesion map, safety flags) -> report.

Python API: :func:`predict` (below); for many calls, :class:`busi_lite.serving.inference.Predictor`
loads the model and the backbone once.
"""

from __future__ import annotations

from busi_lite.common.constants import CLASSES
from busi_lite.common.constants import VERSION as __version__

__all__ = ["CLASSES", "__version__", "predict"]


def predict(paths, model=None, backbone=None, threshold_malignant: float | None = None, flags=None,
            overlay_dir=None, frame: int | None = None, box=None, boxes=None, show_anyway: bool = False) -> list:
    """Classify breast-ultrasound images and DICOM files.

    Parameters
    ----------
    paths : str | Path | list of them
        Image files (PNG, JPEG, BMP, TIFF), DICOM files (``.dcm``/``.dicom``, or any
        file with the ``DICM`` preamble; needs ``pip install "busi-lite[dicom]"``)
        and/or folders (their image and DICOM files, sorted, not recursive, lesion
        masks ``*_mask*`` and hidden files skipped).
    model : str | Path | busi_lite.model.model.Model | None
        Model stem ``NAME`` (``NAME.npz`` + ``NAME.json``); default ``$BUSI_LITE_MODEL``,
        then the shipped default model.
    backbone : str | Path | busi_lite.features.backbone.Backbone | None
        ONNX backbone; default ``$BUSI_LITE_BACKBONE``, then the shipped one. It must be
        the backbone the model was trained on (checked by SHA-256).
    threshold_malignant : float in [0, 1] | None
        p(malignant) at or above which ``malignant_alert`` is set; default: the model's
        operating point (chosen on training data for high sensitivity).
    flags : busi_lite.serving.flags.FlagConfig | None
        Which safety flags to raise and threshold overrides; default: all, calibrated.
    overlay_dir : str | Path | None
        When given, write ``<stem>_overlay.png`` per image there (DICOM frames:
        ``<stem>_f<frame>_overlay.png`` for a multi-frame file).
    frame : int >= 0 | None
        DICOM files: predict only this 0-based frame (a file without it fails);
        default every frame, one Prediction each. Other images ignore it.
    box : "x0,y0,x1,y1" | four numbers | None
        Lesion box for ONE image file (its pixels as stored; x1, y1 exclusive): lesion-box
        mode. With a model that has a box head the result adds ``box``, ``box_proba``
        (benign, malignant) and ``box_malignant_alert``; a model without one ignores the
        box with a note in ``notes``. A box outside the image fails that image.
    boxes : dict {image path: box} | None
        Boxes for several images (``busi_lite.serving.boxes.read_boxes_csv`` reads a boxes.csv).
    show_anyway : bool
        Research use: give the verdict even for an unusual input (default: withheld, see below).

    Returns
    -------
    list[busi_lite.serving.inference.Prediction]
        One per image, in argument order. ``ok`` is False (with ``error``) for an image
        that could not be read; the others are still predicted. ``proba`` maps class ->
        probability, ``label`` is the most probable class, ``malignant_alert`` is the
        high-sensitivity screen p(malignant) >= ``malignant_threshold`` (it can be True
        when the label is normal or benign), ``flags`` lists safety flags with reasons;
        ``model`` (busi_lite.model.provenance.Provenance) names the model (name, digest of card
        + weights) and where its threshold came from. When ``unusual_input`` fires the verdict is
        withheld: ``label``, ``proba``, the alerts and the lesion map are None and ``withheld``
        says why. ``to_dict()`` gives JSON-ready data. DICOM frames also carry ``frame``,
        ``n_frames``, ``sop_instance_uid`` and ``dicom_crop`` (the ultrasound region
        used); ``crop_box``/``lesion_bbox`` are in the stored frame's pixels. A
        prediction the model cannot make (non-finite probabilities) is ``ok=False``.

    Example
    -------
    >>> import busi_lite
    >>> [p.label for p in busi_lite.predict(["img.png"])]  # doctest: +SKIP
    """
    from busi_lite.serving.flags import FlagConfig
    from busi_lite.serving.inference import predict_images

    return predict_images(paths, model=model, backbone=backbone, threshold_malignant=threshold_malignant,
                          flags=flags if flags is not None else FlagConfig(), overlay_dir=overlay_dir, frame=frame,
                          box=box, boxes=boxes, show_anyway=show_anyway)
