"""JSON output: one helper so every ``--json`` answer and every JSON file is strict JSON.

``dumps(obj)`` converts NumPy scalars/arrays, tuples, Paths and objects with a
``to_json()`` method, and writes NaN and +-inf as ``null`` (bare ``NaN`` is not
JSON: ``jq``, browsers and most parsers reject it). ``write(path, obj)`` does the
same through :mod:`busi_lite.common.atomic`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from busi_lite.common.atomic import write_text


def jsonable(x):
    """A JSON-ready copy of ``x``: NaN/inf -> None, NumPy -> Python, tuples -> lists."""
    if hasattr(x, "to_json") and callable(x.to_json):
        return jsonable(x.to_json())
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(obj, indent: int | None = 1) -> str:
    """Strict JSON text of ``obj`` (never NaN/Infinity)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write(path, obj, indent: int | None = 1) -> Path:
    """Write ``dumps(obj)`` to ``path`` atomically."""
    return write_text(path, dumps(obj, indent))
