"""A trained model: head + operating point + flag thresholds + OOD statistics + metadata.

Saved as two files side by side, written atomically:
  NAME.npz   arrays only (head params, OOD statistics), loaded with allow_pickle=False
  NAME.json  config, class names, backbone SHA-256, feature shape, preprocessing
             version, split seed and digest, metrics, per-epoch curves, thresholds
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backbone import GRID, N_FEATURES, PREPROCESS_VERSION
from .head import make_head

FORMAT = 1
DEFAULT_MODEL = "busi_lite_default"  # stem of the packaged default model (busi_lite.resources)
ENV_MODEL = "BUSI_LITE_MODEL"


class ModelError(Exception):
    """A saved model is missing, damaged or does not fit; the message says what to do."""


@dataclass
class OOD:
    """Out-of-distribution score on pooled features: squared Mahalanobis distance in the
    top-k PCA subspace of the training features plus the residual energy outside it
    (scaled by its mean variance per dimension), each part divided by its dimension count
    and the two averaged: about 1 for training-like images, large for unlike ones."""
    mean: np.ndarray        # [D]
    components: np.ndarray  # [k,D] orthonormal rows
    scales: np.ndarray      # [k] std of the training data along each component
    resid_var: float        # mean residual variance per remaining dimension
    threshold: float = float("inf")

    @classmethod
    def fit(cls, X: np.ndarray, k: int = 32) -> "OOD":
        """X [N,D] pooled training features."""
        X = np.asarray(X, np.float64)
        mu = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - mu, full_matrices=False)
        k = min(k, len(s) - 1)
        var = s ** 2 / max(len(X) - 1, 1)
        resid = var[k:].sum() / max(X.shape[1] - k, 1)
        return cls(mu.astype(np.float32), vt[:k].astype(np.float32),
                   np.sqrt(var[:k]).astype(np.float32) + 1e-6, float(max(resid, 1e-12)))

    def score(self, X: np.ndarray) -> np.ndarray:
        """X [N,D] -> [N] distance (>= 0)."""
        xc = np.asarray(X, np.float64) - self.mean
        z = xc @ self.components.T.astype(np.float64)              # [N,k]
        resid = xc - z @ self.components.astype(np.float64)         # [N,D]
        k, D = self.components.shape
        inside = ((z / self.scales) ** 2).sum(axis=1) / k           # ~1 for training-like images
        outside = (resid ** 2).sum(axis=1) / self.resid_var / (D - k)  # ~1 as well
        return (inside + outside) / 2


@dataclass
class Model:
    head: object
    meta: dict = field(default_factory=dict)
    ood: OOD | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.get("classes", ("normal", "benign", "malignant")))

    @property
    def has_lesion_map(self) -> bool:
        return self.head.kind == "mtl"

    def predict_features(self, feats: np.ndarray) -> dict:
        """feats [N,7,7,1280] or [N,49,1280] -> {proba [N,C], pooled [N,1280], lesion [N,49] | None}."""
        f = np.asarray(feats)
        if f.shape[-1] != N_FEATURES or f.size // len(f) != GRID * GRID * N_FEATURES:
            raise ModelError(f"features of shape {f.shape} do not fit the model (expected [N,7,7,{N_FEATURES}])")
        cells = f.reshape(len(f), GRID * GRID, N_FEATURES).astype(np.float32)
        pooled = cells.mean(axis=1)
        if self.head.kind == "mtl":
            return {"proba": self.head.predict_proba(cells), "pooled": pooled, "lesion": self.head.lesion_map(cells)}
        return {"proba": self.head.predict_proba(pooled), "pooled": pooled, "lesion": None}

    # ------------------------------------------------------------ persistence
    def save(self, path) -> tuple[Path, Path]:
        """Write NAME.npz and NAME.json (each via a temp file + rename)."""
        npz, js = _paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"head.{k}": v for k, v in self.head.params.items()}
        if self.ood is not None:
            arrays.update({"ood.mean": self.ood.mean, "ood.components": self.ood.components,
                           "ood.scales": self.ood.scales})
        meta = dict(self.meta, format=FORMAT, head=self.head.config())
        if self.ood is not None:
            meta["ood"] = {"resid_var": self.ood.resid_var, "threshold": self.ood.threshold}
        tmp_npz = npz.with_name(f".{npz.stem}.{os.getpid()}.tmp.npz")
        tmp_js = js.with_name(f".{js.name}.{os.getpid()}.tmp")
        try:
            np.savez(tmp_npz, **arrays)
            tmp_js.write_text(json.dumps(_jsonable(meta), indent=1, allow_nan=True))
            os.replace(tmp_npz, npz)
            os.replace(tmp_js, js)
        finally:
            for t in (tmp_npz, tmp_js):
                if t.exists():
                    t.unlink()
        return npz, js

    @classmethod
    def load(cls, path=None) -> "Model":
        from .resources import resolve  # path > $BUSI_LITE_MODEL > the packaged default
        npz, js = _paths(resolve("model", path).path)
        for p in (npz, js):
            if not p.is_file():
                raise ModelError(f"{p}: model file not found -> train one with `busi-lite train --out "
                                 f"{npz.with_suffix('')}` or pass --model NAME (NAME.npz + NAME.json)")
        try:
            meta = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, json.JSONDecodeError) as e:
            raise ModelError(f"{npz.with_suffix('')}: model files are damaged ({e}) -> retrain it") from e
        if meta.get("format") != FORMAT:
            raise ModelError(f"{js}: model format {meta.get('format')} is not {FORMAT} -> retrain with this version")
        if meta.get("preprocess_version") != PREPROCESS_VERSION:
            raise ModelError(f"{js}: trained with preprocessing {meta.get('preprocess_version')!r}, this busi-lite "
                             f"uses {PREPROCESS_VERSION!r} -> re-extract features and retrain")
        if tuple(meta.get("feature_shape", ())) != (GRID, GRID, N_FEATURES):
            raise ModelError(f"{js}: feature shape {meta.get('feature_shape')} != [7,7,1280] -> retrain")
        params = {k[5:]: v for k, v in arrays.items() if k.startswith("head.")}
        try:
            head = make_head(meta["head"], params)
        except (ValueError, KeyError) as e:
            raise ModelError(f"{npz}: head does not match its sidecar ({e}) -> retrain") from e
        ood = None
        if "ood.mean" in arrays:
            ood = OOD(arrays["ood.mean"], arrays["ood.components"], arrays["ood.scales"],
                      float(meta["ood"]["resid_var"]), float(meta["ood"]["threshold"]))
        return cls(head, meta, ood)

    def check_backbone(self, sha256: str, what: str) -> None:
        """Refuse features from another backbone than the one the model was trained on."""
        if self.meta.get("backbone_sha256") != sha256:
            raise ModelError(f"{what} uses backbone {sha256[:12]}..., the model was trained on "
                             f"{str(self.meta.get('backbone_sha256'))[:12]}... -> use the same backbone "
                             "(--backbone) or retrain the model on these features")


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x
