"""Where the backbone and the model come from: option > environment variable > packaged.

Contract:
  resolve(kind, option=None) -> Resolved(path, source)
    kind    "backbone" (an .onnx file) or "model" (a stem NAME for NAME.npz + NAME.json)
    source  "option"       the caller passed a path (--backbone / --model / a keyword)
            "environment"  $BUSI_LITE_BACKBONE / $BUSI_LITE_MODEL is set and not empty
            "packaged"     the copy shipped inside the installed package
  resolve() does not check that the file exists: the loaders (backbone.resolve_path,
  Model.load) do, with their own messages.

The packaged files live in the top-level ``weights/`` folder of the source tree, which
is installed as the package ``busi_lite.weights`` (pyproject ``package-dir``); they are
found next to the installed package (its import spec's folder, what
importlib.resources.files gives for a package on disk), never relative to the current directory. One fallback: when ``busi_lite.weights`` cannot be imported (the
source tree is used without installing it, or an editable install made before
``weights/`` became package data) the checkout's own ``weights/`` folder next to
``busi_lite/`` is used. Zipped installs are not supported (onnxruntime needs a file).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from busi_lite.common.errors import ConfigError

PACKAGE = "busi_lite.weights"
KINDS = ("backbone", "model")
ENV = {"backbone": "BUSI_LITE_BACKBONE", "model": "BUSI_LITE_MODEL"}
PACKAGED_NAME = {"backbone": "mobilenet_v2_035_224.onnx", "model": "busi_lite_default"}
SOURCES = ("option", "environment", "packaged")


@dataclass(frozen=True)
class Resolved:
    """A chosen file: ``path`` and where the choice came from (one of SOURCES)."""
    path: Path
    source: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "source": self.source}


def packaged_dir() -> Path:
    """The folder holding the packaged weights (see the module docstring)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return Path(__file__).resolve().parents[2] / "weights"
    return Path(next(iter(spec.submodule_search_locations)))


def packaged(kind: str) -> Path:
    """The packaged default of ``kind`` (it may be missing in a broken install)."""
    _check_kind(kind)
    return packaged_dir() / PACKAGED_NAME[kind]


def resolve(kind: str, option=None) -> Resolved:
    """option > $BUSI_LITE_<KIND> > packaged; empty strings count as not given."""
    _check_kind(kind)
    if option is not None and str(option) != "":
        return Resolved(Path(option).expanduser(), "option")
    env = os.environ.get(ENV[kind], "")
    if env:
        return Resolved(Path(env).expanduser(), "environment")
    return Resolved(packaged(kind), "packaged")


def _check_kind(kind) -> None:
    if kind not in KINDS:
        raise ConfigError(f"kind {kind!r} is not a packaged resource", f"use one of {', '.join(KINDS)}",
                          param="kind")
