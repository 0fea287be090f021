"""Report inputs: trained models, sweep results and flag evidence, loaded and checked
once, so a file of the wrong kind or schema fails here with a clear message rather
than inside a figure. :class:`ReportInputs` is everything one report is built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from busi_lite.common.errors import BusiError
from busi_lite.serving.flags import FlagEvidence


class ReportError(BusiError, ValueError):
    """An input of the report is missing or does not fit; the message says what to do."""


SWEEP_ROW_KEYS = ("name", "fraction", "seeds", "config", "malignant_recall", "malignant_far", "malignant_precision",
                  "malignant_auc", "accuracy", "dice", "train_seconds")


@dataclass
class ModelInput:
    name: str           # display name (file stem)
    path: Path          # stem (NAME)
    meta: object        # card.ModelCard, read by attribute (selection_table also reads a raw card dict)
    model: object = None  # busi_lite.model.model.Model, for lesion maps


@dataclass
class SweepInput:
    name: str
    path: Path
    data: dict          # {"results": [run], "summary": [row], "cache", "backbone_sha256", ...}


@dataclass
class ExternalInput:
    path: Path          # the JSON file it was read from
    ev: object          # busi_lite.evaluation.external.ExternalEvaluation


@dataclass
class ReportInputs:
    """Everything one report is built from.

    ``models``/``sweeps``: loaded inputs (or model stems / sweep JSON paths, loaded by
    :func:`busi_lite.report.build_report`); ``cache``: FeatureCache or path (lesion
    examples, digests) or None; ``flags``: FlagEvidence list (or an evaluate-JSON
    path); ``curves``: sweep config names for Fig. 1-2 (default: best by recall and
    model-7pp); ``command``/``steps``: how to rebuild this report and its inputs
    (the CLI fills them in; the library does not know command lines); ``externals``:
    evaluations on other labelled folders (``busi-lite evaluate --data DIR --json``)."""
    out_dir: Path
    models: list = field(default_factory=list)
    sweeps: list = field(default_factory=list)
    cache: object = None
    flags: list = field(default_factory=list)
    flags_path: Path | None = None
    externals: list = field(default_factory=list)  # [ExternalInput] (or evaluate --data JSON paths)
    external_commands: list = field(default_factory=list)  # the command that wrote each external evaluation
    curves: list = field(default_factory=list)
    n_lesions: int = 6
    site_curves: list = field(default_factory=list)  # site-cv --curve JSON paths (report.site_curve)
    command: str | None = None
    steps: list = field(default_factory=list)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        if isinstance(self.n_lesions, bool) or not isinstance(self.n_lesions, int) or not 1 <= self.n_lesions <= 12:
            raise ReportError(f"n_lesions must be an integer in 1..12, got {self.n_lesions!r}",
                              "choose how many test images to show", param="n_lesions")


def model_stem(path) -> Path:
    """NAME, NAME.npz or NAME.json -> NAME."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


def load_model_input(path) -> ModelInput:
    """Load a trained model (weights + model card); a damaged or outdated one fails here."""
    from busi_lite.model.model import Model

    m = Model.load(path)
    stem = model_stem(path)
    return ModelInput(name=stem.name, path=stem, meta=m.card, model=m)


def _read_json(path: Path, what: str, fix: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the {what} ({e})", fix) from None


def load_sweep_input(path) -> SweepInput:
    """Load OUT.json of ``busi-lite sweep``; rows lacking what the report needs fail here."""
    path = Path(path)
    fix = "give the OUT.json that `busi-lite sweep` wrote (with this version)"
    data = _read_json(path, "sweep result", fix)
    if not isinstance(data, dict) or "summary" not in data or "results" not in data:
        raise ReportError(f"{path}: not a sweep result (no 'summary'/'results')", fix)
    for r in data["summary"]:
        missing = [k for k in SWEEP_ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise ReportError(f"{path}: sweep summary row lacks {', '.join(missing)}: another format", fix)
    for r in data["results"]:
        if not isinstance(r, dict) or not {"config", "seed", "fraction", "test", "history"} <= set(r):
            raise ReportError(f"{path}: a sweep run lacks config/seed/fraction/test/history: another format", fix)
    try:  # the typed record checks every field (schema version, types) when it exists
        from busi_lite.model.records import SweepResult
    except ImportError:  # pragma: no cover - older layout
        SweepResult = None
    if SweepResult is not None:
        try:
            SweepResult.from_json(data, str(path))
        except BusiError as e:
            raise ReportError(f"{path}: not a sweep result this version reads ({e.what})", e.fix or fix) from None
    return SweepInput(name=path.stem, path=path, data=data)


def load_flags_input(path) -> list[FlagEvidence]:
    """Load ``busi-lite evaluate --json`` output (one object or a list of them)."""
    path = Path(path)
    data = _read_json(path, "flags evidence",
                      "write it with `busi-lite evaluate` (JSON output) of this version")
    runs = data if isinstance(data, list) else [data]
    return [FlagEvidence.from_json(r, source=str(path)) for r in runs]


def load_external_input(path) -> ExternalInput:
    """Load ``busi-lite evaluate --data DIR --json`` output (an ExternalEvaluation record);
    another schema or a damaged file fails here, naming the file."""
    from busi_lite.evaluation.external import ExternalEvaluation

    path = Path(path)
    fix = "write it with `busi-lite evaluate --model M --data DIR --json --per-image` of this version"
    data = _read_json(path, "external evaluation", fix)
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("external_evaluation/"):
        raise ReportError(f"{path}: not an external evaluation (schema {data.get('schema') if isinstance(data, dict) else None!r}"
                          f", want {ExternalEvaluation.SCHEMA!r})", fix, param="external")
    try:
        ev = ExternalEvaluation.from_json(data, str(path))
    except BusiError as e:
        raise ReportError(f"{path}: not an external evaluation this version reads ({e.what})", e.fix or fix,
                          param="external") from None
    return ExternalInput(path=path, ev=ev)
