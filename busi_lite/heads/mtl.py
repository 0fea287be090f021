"""MTLHead: multi-task head on the backbone's GxG feature grid, class + lesion map (kind "mtl")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from busi_lite.common.params import Interval, param
from busi_lite.features.spec import DEFAULT
from busi_lite.heads.base import (
    Head,
    HeadOutput,
    bce_logits,
    cross_entropy,
    log_softmax,
    sigmoid,
    trunc_normal,
)
from busi_lite.heads.plain import PlainParams
from busi_lite.heads.registry import register_head


@dataclass(frozen=True)
class MTLParams(PlainParams):
    lam: float = param(1.0, Interval(float, 0), "Weight of the lesion-map (segmentation) loss.", token="lam{:g}")


@register_head
class MTLHead(Head):
    """Multi-task head on spatial features X [N,K,D] (K = G*G cells of the backbone's grid, 49 for 7x7):
    Hc = relu(X@W1 + b1) [N,K,H] (the same hidden layer on each cell = 1x1 conv);
    class logits = mean_k(Hc) @ W2 [N,C] (no bias); lesion logit per cell s = Hc@ws + bs [N,K].
    loss = mean_n w_n*CE_n + lam * mean_n (seg_weight_n * mean_k BCE(sigmoid(s_nk), seg_target_nk)).
    params: "W1" [D,H], "b1" [H], "W2" [H,C], "ws" [H], "bs" [1].
    Training targets (``targets``): seg_target = the cache's per-cell lesion fractions ("grid") of each
    sample's view; seg_weight defaults to ones."""
    kind, consumes, ndim = "mtl", "grid", 3
    extra_losses = ("seg",)
    has_lesion_map = True
    Params = MTLParams
    targets: ClassVar[dict] = {"seg_target": "grid"}

    def __init__(self, n_features=DEFAULT.n_features, n_hidden=100, n_classes=3, lam=1.0, seed=0, dtype=np.float32):
        super().__init__(n_features, n_hidden, n_classes, seed, dtype)
        self.lam = MTLParams(lam=lam).lam  # the declared constraint (lam >= 0, finite)

    @classmethod
    def build(cls, params, n_features, n_classes, seed):
        return cls(n_features, params.hidden, n_classes, lam=params.lam, seed=seed)

    @classmethod
    def param_shapes(cls, config) -> dict:
        shapes = super().param_shapes(config)
        H = shapes["b1"][0]
        return {**shapes, "ws": (H,), "bs": (1,)}

    def _init_params(self, rng):
        H = self.n_hidden
        return {**super()._init_params(rng), "ws": trunc_normal(rng, (H,), H, self.dtype),  # kernel [H,1]
                "bs": np.zeros(1, self.dtype)}

    def config(self):
        return {**super().config(), "lam": self.lam}

    def _check_seg(self, X, seg_target, seg_weight):
        N, K = X.shape[:2]
        if seg_target is None:
            if seg_weight is not None:
                raise ValueError("seg_weight given without seg_target")
            return None, None
        t = np.asarray(seg_target)
        if t.shape != (N, K):
            raise ValueError(f"seg_target must have shape ({N}, {K}) = [N,K] like X, got {t.shape}")
        if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise ValueError("seg_target must hold lesion fractions in [0, 1] (no NaN)")
        return t, self._check_w(seg_weight, N, "seg_weight")

    def _forward(self, X):  # X [N,K,D] -> logits [N,C], lesion logits [N,K], cache
        N, K, D = X.shape
        P = self.params
        A = self._hidden(X.reshape(N * K, D))  # [N*K,H], one matmul for all cells
        Hc = np.maximum(A, 0)
        Hm = Hc.reshape(N, K, -1).mean(1)  # [N,H] mean over cells
        s = (Hc @ P["ws"] + P["bs"]).reshape(N, K)
        return Hm @ P["W2"], (s, A, Hc, Hm)

    def lesion_map(self, X, chunk=256):
        """X [N,K,D] -> lesion probability per cell [N,K] in [0,1]."""
        X = self._check_X(X)
        return np.concatenate([sigmoid(self._forward(self._cast(X[i:i + chunk]))[1][0])
                               for i in range(0, len(X), chunk)])

    def predict(self, X, chunk=256) -> HeadOutput:
        """X [N,K,D] -> HeadOutput(proba [N,C], lesion [N,K]): predict_proba and lesion_map
        from ONE forward pass per chunk."""
        X = self._check_X(X)
        z, s = [], []
        for i in range(0, len(X), chunk):
            zi, (si, *_) = self._forward(self._cast(X[i:i + chunk]))
            z.append(zi)
            s.append(si)
        return HeadOutput(np.exp(log_softmax(np.concatenate(z))), sigmoid(np.concatenate(s)))

    def _loss_grads(self, X, y, w, t=None, sw=None):
        N, K, D = X.shape
        P = self.params
        z, (s, A, Hc, Hm) = self._forward(X)
        loss, dz, stats = cross_entropy(z, y, w)
        ds = np.zeros_like(s)  # dL/ds [N,K]
        stats["seg"] = 0.0
        if t is not None:
            t = t.astype(self.dtype, copy=False)
            seg = (sw * bce_logits(s, t).mean(1)).mean()  # mean_n sw_n * mean_k BCE
            loss += self.lam * float(seg)
            stats["seg"] = float(seg)
            ds = (self.lam / (N * K)) * sw[:, None] * (sigmoid(s) - t)
        # dL/dHc [N,K,H]: class path spreads evenly over cells, seg path per cell
        dHc = (dz @ P["W2"].T / K)[:, None, :] + ds[:, :, None] * P["ws"]
        dA = dHc.reshape(N * K, -1) * (A > 0)
        grads = {"W1": X.reshape(N * K, D).T @ dA, "b1": dA.sum(0), "W2": Hm.T @ dz,
                 "ws": Hc.T @ ds.ravel(), "bs": np.array([ds.sum()], self.dtype)}
        return loss, grads, stats
