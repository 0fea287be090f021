"""`busi-lite info`: the facts to paste into a bug report.

Contract:
  collect(model=None, backbone=None) -> Info
    versions of busi-lite and its libraries; which backbone and model were found
    (path, SHA-256, source: "option" | "environment" | "packaged", with the same
    precedence the commands use), whether each loads and whether they agree (the
    model's recorded backbone_sha256 equals the backbone file's SHA-256); the BLAS
    libraries and their thread counts (threadpoolctl), the BLAS thread count
    busi-lite itself uses, and onnxruntime's intra-op threads for the backbone.
    It NEVER raises: every problem becomes a field holding the error text.
  render(info, as_json=False) -> str   human text (or the JSON of ``info.to_json()``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field

from busi_lite.common.constants import VERSION as __version__

# distribution names; pydicom and matplotlib are optional extras
LIBRARIES = ("numpy", "onnxruntime", "h5py", "pillow", "click", "threadpoolctl", "pydicom", "matplotlib")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


@dataclass
class Found:
    """One resource as the commands would find it. ``loads``: None when not tried."""
    kind: str                       # "backbone" | "model"
    path: str | None = None         # the backbone file, or the model stem NAME (NAME.npz + NAME.json)
    source: str | None = None       # "option" | "environment" | "packaged"
    sha256: str | None = None       # of the .onnx, or of the model's .npz (details.digest: card + weights)
    loads: bool | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class Info:
    """Everything collect() found; ``errors`` lists the problems in one place."""
    busi_lite: str
    python: str
    platform: str
    cpu_count: int | None
    versions: dict                  # library -> version, None when not installed
    backbone: Found
    model: Found
    agree: bool | None              # model trained on this backbone? None when unknown
    agreement: str                  # one sentence saying so
    blas: list                      # [{library, version, threads, threading_layer, path}]
    blas_threads_used: int | None   # what busi-lite limits BLAS to (busi_lite.common.threads)
    onnxruntime_threads: int | None  # intra-op threads of the backbone session
    environment: dict               # BUSI_LITE_* and *_NUM_THREADS variables that are set
    errors: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _versions() -> dict:
    """Installed distribution versions (package metadata; nothing is imported)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except Exception:  # noqa: BLE001  (not installed or broken metadata: say so, never raise)
            out[name] = None
    return out


def _backbone(option) -> tuple[Found, int | None]:
    f = Found("backbone")
    threads = None
    try:
        from busi_lite.common.resources import resolve
        from busi_lite.features.backbone import Backbone, file_sha256

        r = resolve("backbone", option)
        f.path, f.source = str(r.path), r.source
        if not r.path.is_file():
            f.loads, f.error = False, f"file not found: {r.path}"
            return f, None
        f.sha256 = file_sha256(r.path)
        f.details["bytes"] = r.path.stat().st_size
        bb = Backbone(r.path)
        f.loads = True
        f.details["spec"] = bb.spec.name  # features.spec: the contract the file was checked against
        f.details["registered"] = bb.registered  # the file is the one that spec pins (same SHA-256)
        threads = bb.session.get_session_options().intra_op_num_threads
        f.details["providers"] = bb.session.get_providers()
    except Exception as e:  # noqa: BLE001  (a bug report needs the text, not a traceback)
        f.loads, f.error = False, _error(e)
    return f, threads


def _model(option) -> Found:
    f = Found("model")
    try:
        from busi_lite.common.resources import resolve
        from busi_lite.features.backbone import file_sha256
        from busi_lite.model.model import Model, model_paths
        from busi_lite.model.provenance import provenance

        r = resolve("model", option)
        f.path, f.source = str(r.path), r.source
        npz, js = model_paths(r.path)
        if npz.is_file():
            f.sha256 = file_sha256(npz)
        if js.is_file():
            f.details["sidecar_sha256"] = file_sha256(js)
        m = Model.load(r.path)
        f.loads = True
        pv = provenance(m, str(r.path), r.source)
        meta = json.loads(js.read_text())  # the sidecar's plain JSON
        f.details.update({"name": pv.name, "digest": pv.digest, "head": meta.get("config", {}).get("head"),
                          "classes": meta.get("classes"), "backbone_sha256": meta.get("backbone_sha256"),
                          "trained_with": meta.get("package_version"),
                          "malignant_threshold": pv.malignant_threshold, "threshold_source": pv.threshold_source,
                          "trained_on": [f"{x.get('name')}: " + ", ".join(f"{c} {n}" for c, n in
                                                                           (x.get("counts") or {}).items())
                                         for x in meta.get("sources") or []] or "not named on the model card"})
    except Exception as e:  # noqa: BLE001
        f.loads, f.error = False, _error(e)
    return f


def _agreement(bb: Found, m: Found) -> tuple[bool | None, str]:
    want = m.details.get("backbone_sha256")
    if bb.sha256 is None or want is None:
        return None, "unknown: the backbone's or the model's SHA-256 is not available"
    if want == bb.sha256:
        return True, "yes: the model was trained on this backbone"
    return False, (f"NO: the model was trained on backbone {want[:12]}..., this backbone is {bb.sha256[:12]}... "
                   "-> give the matching backbone or a model trained on this one")


def _blas() -> tuple[list, int | None, str | None]:
    try:
        from busi_lite.common.threads import DEFAULT_BLAS_THREADS, blas_pools

        return [p.to_dict() for p in blas_pools()], DEFAULT_BLAS_THREADS, None
    except Exception as e:  # noqa: BLE001
        return [], None, _error(e)


def collect(model=None, backbone=None) -> Info:
    """The facts of this installation (see the module docstring). Never raises."""
    bb, ort_threads = _backbone(backbone)
    m = _model(model)
    agree, agreement = _agreement(bb, m)
    blas, used, blas_error = _blas()
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("BUSI_LITE_") or k in THREAD_VARIABLES}
    errors = [f"{f.kind}: {f.error}" for f in (bb, m) if f.error]
    if blas_error:
        errors.append(f"blas: {blas_error}")
    if agree is False:
        errors.append(f"backbone/model: {agreement}")
    return Info(busi_lite=__version__, python=sys.version.split()[0], platform=platform.platform(),
                cpu_count=os.cpu_count(), versions=_versions(), backbone=bb, model=m, agree=agree,
                agreement=agreement, blas=blas, blas_threads_used=used, onnxruntime_threads=ort_threads,
                environment=env, errors=errors)


def _found_lines(f: Found) -> list[str]:
    state = {True: "loads", False: "DOES NOT LOAD", None: "not tried"}[f.loads]
    lines = [f"{f.kind}: {f.path or '-'}", f"  from: {f.source or '-'}", f"  sha256: {f.sha256 or '-'}",
             f"  status: {state}"]
    if f.error:
        lines.append(f"  error: {f.error}")
    for k, v in f.details.items():
        lines.append(f"  {k}: {v}")
    return lines


def render(info: Info, as_json: bool = False) -> str:
    """Human text for a terminal or a bug report (or JSON with ``as_json``)."""
    if as_json:
        return json.dumps(info.to_json(), indent=1, default=str)
    v = info.versions
    lines = [f"busi-lite {info.busi_lite}  (Python {info.python}, {info.platform}, {info.cpu_count} CPUs)",
             "libraries: " + ", ".join(f"{k} {v[k] or '(not installed)'}" for k in v), ""]
    lines += _found_lines(info.backbone) + _found_lines(info.model)
    lines += [f"model and backbone agree: {info.agreement}", ""]
    if info.blas:
        for p in info.blas:
            lines.append(f"BLAS: {p['library']} {p['version']} ({p['threading_layer']}), "
                         f"{p['threads']} threads now; busi-lite limits it to {info.blas_threads_used}")
    else:
        lines.append("BLAS: none found by threadpoolctl")
    lines.append(f"onnxruntime intra-op threads (backbone): {info.onnxruntime_threads or '-'}")
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in info.environment.items()) or "(none set)"))
    if info.errors:
        lines += ["", "problems:"] + [f"  - {e}" for e in info.errors]
    return "\n".join(lines)
