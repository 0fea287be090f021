"""PlainHead: the Teachable Machine head on pooled features (kind "plain")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_lite.common.params import Interval, param
from busi_lite.features.spec import DEFAULT
from busi_lite.heads.base import Head, cross_entropy
from busi_lite.heads.optim import AdamParams
from busi_lite.heads.registry import register_head


@dataclass(frozen=True)
class PlainParams(AdamParams):
    hidden: int = param(100, Interval(int, 1), "Hidden units of the head.", token="h{}")


@register_head
class PlainHead(Head):
    """Teachable Machine head: pooled features x [N,D] -> h = relu(x@W1 + b1) [N,H]
    -> logits = h@W2 [N,C] (NO output bias, as TM) -> softmax.
    params: "W1" [D,H], "b1" [H], "W2" [H,C]. Init: kernels truncated normal,
    std sqrt(1/fan_in), re-drawn beyond 2 std; biases 0 (tfjs varianceScaling({}), as TM)."""
    kind, consumes, ndim = "plain", "pooled", 2
    Params = PlainParams

    def __init__(self, n_features=DEFAULT.n_features, n_hidden=100, n_classes=3, seed=0, dtype=np.float32):
        super().__init__(n_features, n_hidden, n_classes, seed, dtype)

    def _forward(self, X):  # X [N,D] -> logits [N,C], cache
        A = self._hidden(X)  # [N,H]
        Hh = np.maximum(A, 0)
        return Hh @ self.params["W2"], (A, Hh)

    def _loss_grads(self, X, y, w, t=None, sw=None):
        z, (A, Hh) = self._forward(X)
        loss, dz, stats = cross_entropy(z, y, w)
        dA = (dz @ self.params["W2"].T) * (A > 0)  # [N,H]
        grads = {"W1": X.T @ dA, "b1": dA.sum(0), "W2": Hh.T @ dz}
        return loss, grads, stats
