"""The result of one prediction: a typed record every face (CLI, JSON/CSV, overlay, web page) reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from busi_lite.model.provenance import Provenance

# fields that make up a verdict: emptied when the verdict is withheld (see Prediction.withhold)
VERDICT_FIELDS = ("proba", "label", "malignant_alert", "lesion", "lesion_peak", "lesion_present", "lesion_area",
                  "lesion_bbox", "box_proba", "box_malignant_alert", "proposed_box")


@dataclass
class Prediction:
    """One image (or one DICOM frame). Coordinates are [left, top, right, bottom], exclusive,
    in the pixels of the file as stored (for DICOM: the frame, before the region crop)."""
    path: str
    ok: bool
    error: str | None = None
    proba: dict | None = None
    label: str | None = None
    malignant_alert: bool | None = None
    malignant_threshold: float | None = None
    lesion: list | None = None          # GxG lesion probabilities (G: the backbone's grid), rows top->bottom; or None
    lesion_peak: float | None = None
    lesion_present: bool | None = None
    lesion_area: float | None = None    # fraction of the centre crop with lesion probability >= 0.5
    lesion_bbox: list | None = None     # box of the cells >= 0.5, original (frame) pixels
    flags: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)   # flag name -> flagged | passed | disabled | not_applicable
    ood_score: float | None = None
    size: list | None = None            # [width, height] of the pixels used (EXIF applied; DICOM: the region)
    crop_box: list | None = None        # centre crop the backbone sees, original (frame) pixels
    overlay: str | None = None          # path of the overlay PNG, when written
    frame: int | None = None            # DICOM: 0-based frame index; None for other images
    n_frames: int | None = None         # DICOM: frames in the file
    sop_instance_uid: str | None = None  # DICOM: SOP Instance UID (the only DICOM identifier reported)
    dicom_crop: list | None = None      # DICOM: ultrasound region [x0, y0, x1, y1] applied first, or None
    box: list | None = None             # lesion box as used (clamped), original (frame) pixels; None = no box mode
    box_proba: dict | None = None       # box head: {benign, malignant} from [whole image, lesion crop]
    box_malignant_alert: bool | None = None   # box head p(malignant) >= box_malignant_threshold
    box_malignant_threshold: float | None = None
    proposed_box: list | None = None    # lesion-map models: a box to start from (coarse), original pixels
    notes: list = field(default_factory=list)  # plain-language remarks, e.g. a box that was ignored
    model: Provenance | None = None     # which model and threshold made this result (one record per loaded model)
    withheld: str | None = None         # why no verdict is given (unusual input); None = the verdict is shown
    recommended: str | None = None      # the answer to trust: "box" or "whole_image" (see serving.advice)
    recommended_reason: str | None = None
    shift_coords: list | None = field(default=None, repr=False)  # site-shift check coordinates (not in to_dict)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def name(self) -> str:
        """The file, plus ``[frame i of n]`` (0-based i) for a DICOM frame."""
        return self.path if self.frame is None else f"{self.path} [frame {self.frame} of {self.n_frames}]"

    def withhold(self, reason: str) -> None:
        """No verdict for this input: label, probabilities, screen, lesion map and box answers are
        emptied and ``withheld`` says why; flags, checks, the unusual-input score and provenance stay."""
        for k in VERDICT_FIELDS:
            setattr(self, k, None)
        self.withheld = reason

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("shift_coords")
        d["flags"] = [{"name": f.name, "reason": f.reason} for f in self.flags]
        d["model"] = None if self.model is None else self.model.to_dict()
        return d
