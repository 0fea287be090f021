"""A toy head registered by the tests (kind "toy_linear"): softmax regression on pooled features,
trained by the shared mini-batch Adam. The conformance suite (test_head_conformance.py) checks it
without naming it; it also shows how small a new head is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_lite.common.params import Interval, param
from busi_lite.heads.base import Head, cross_entropy, trunc_normal
from busi_lite.heads.optim import AdamParams
from busi_lite.heads.registry import register_head


@dataclass(frozen=True)
class ToyParams(AdamParams):
    scale: float = param(1.0, Interval(float, 0, None, open="low"), "Input scaling of the toy head.", token="x{:g}")


@register_head
class ToyLinearHead(Head):
    """X [N,D] -> logits (scale * X) @ W + b [N,C]. params: "W" [D,C], "b" [C]."""
    kind, consumes, ndim = "toy_linear", "pooled", 2
    Params = ToyParams
    main = False  # registered after the CLI built its options: not offered by train/sweep

    def __init__(self, n_features=1280, n_classes=3, scale=1.0, seed=0, dtype=np.float32):
        self.n_features, self.n_classes, self.n_hidden, self.scale = int(n_features), int(n_classes), 0, float(scale)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.params = {"W": trunc_normal(rng, (self.n_features, self.n_classes), self.n_features, self.dtype),
                       "b": np.zeros(self.n_classes, self.dtype)}

    @classmethod
    def build(cls, params, n_features, n_classes, seed):
        return cls(n_features, n_classes, scale=params.scale, seed=seed)

    @classmethod
    def param_shapes(cls, config) -> dict:
        return {"W": (config["n_features"], config["n_classes"]), "b": (config["n_classes"],)}

    def config(self):
        return {"kind": self.kind, "n_features": self.n_features, "n_classes": self.n_classes, "scale": self.scale}

    def _forward(self, X):
        with np.errstate(invalid="ignore", over="ignore"):
            z = (self.scale * X) @ self.params["W"] + self.params["b"]
        if not np.isfinite(z).all():
            raise ValueError("X contains NaN or inf; recompute or drop those feature rows")
        return z, None

    def _loss_grads(self, X, y, w, t=None, sw=None):
        z, _ = self._forward(X)
        loss, dz, stats = cross_entropy(z, y, w)
        return loss, {"W": (self.scale * X).T @ dz, "b": dz.sum(0)}, stats
