"""BoxHead: the lesion-box head, benign vs malignant from [whole image, lesion crop] (kind "box").

Input X [N, 2*D] (D: the backbone spec's n_features): the whole image's pooled features (the
centre crop, as the main head sees it) followed by the pooled features of the lesion crop (the box
plus 30 % margin on each side, resized to the input size; busi_lite.features.preprocess). Output: proba [N, 2] over
``CLASSES`` = (benign, malignant). A box marks a lesion, so there is no normal class.

Model: L2-regularised logistic regression on standardised features,
    z = (x - mean) / scale            (mean [D] of the training X, scale ONE global RMS)
    p(malignant) = sigmoid(z @ w + b)
fitted by minimising (scikit-learn's form, with per-sample weights s_i)
    C * sum_i s_i * logloss_i + 0.5 * ||w||^2
with the shared L-BFGS (busi_lite.heads.optim; deterministic, no random init). ``C`` small =
strong L2 (the lab study found C about 0.01 on globally scaled features as good as an MLP and steadier).

A two-class ``Head`` registered as kind "box" but not a main head (``main = False``: ``train --head``
never offers it): a Model carries it as its optional second head ``box_head`` (busi_lite.model.model).
It consumes "pooled+box": training reads [whole view, box view] from the cache
(busi_lite.training.core.cache_inputs), serving joins the two pooled vectors (``feature_inputs``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_lite.common.errors import ConfigError
from busi_lite.common.params import Interval, Params, param
from busi_lite.features.spec import DEFAULT
from busi_lite.heads.base import Head, HeadOutput, check_params
from busi_lite.heads.optim import lbfgs
from busi_lite.heads.registry import register_head

N_FEATURES = DEFAULT.n_features  # pooled features per input of the default backbone (features.spec)
CLASSES = ("benign", "malignant")
DEFAULT_C = 0.01
MAX_ITER, TOL = 500, 1e-6  # L-BFGS: stop when the largest gradient entry is below TOL


@dataclass(frozen=True)
class BoxParams(Params):
    C: float = param(DEFAULT_C, Interval(float, 0, None, open="low"),
                     "Inverse L2 strength of the box head (smaller = stronger).", token="C{:g}")

    def fit_kwargs(self) -> dict:
        return {}


def sigmoid(s):
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


@register_head
class BoxHead(Head):
    """Logistic regression on [whole pooled, crop pooled] X [N, 2560] -> proba [N, 2] (benign, malignant).
    params: "mean" [D], "scale" [1] (fitted statistics, not trained), "w" [D], "b" [1]."""
    kind, consumes, ndim = "box", "pooled+box", 2
    main = False
    classes = CLASSES
    Params = BoxParams
    frozen_params = ("mean", "scale")
    warm_start = True  # fit(start=another fitted BoxHead)

    def __init__(self, n_features=2 * N_FEATURES, C=DEFAULT_C, n_classes=2, seed=0):
        if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise ConfigError(f"n_features must be an integer >= 1, got {n_features!r}", "e.g. 2560",
                              param="n_features")
        if n_classes != 2:
            raise ConfigError(f"the box head has 2 classes (benign, malignant), got n_classes={n_classes!r}",
                              "use n_classes=2", param="n_classes")
        self.C = BoxParams(C=C).C  # the declared constraint (C > 0, finite)
        self.n_features, self.n_classes, self.n_hidden = int(n_features), 2, 0
        self.dtype = np.dtype(np.float32)
        D = self.n_features
        self.params = {"mean": np.zeros(D, np.float32), "scale": np.ones(1, np.float32),
                       "w": np.zeros(D, np.float32), "b": np.zeros(1, np.float32)}
        self.iterations = 0

    # --- protocol --------------------------------------------------------------------
    @classmethod
    def build(cls, params, n_features, n_classes, seed):
        """A fresh box head on ``n_features`` backbone features (its input is twice that wide)."""
        return cls(2 * n_features, params.C, n_classes, seed)

    @classmethod
    def input_shape(cls, n_features) -> tuple:
        return (2 * n_features,)

    def config(self) -> dict:
        return {"kind": self.kind, "n_features": self.n_features, "n_classes": 2, "C": self.C}

    @classmethod
    def param_shapes(cls, config) -> dict:
        D = config.get("n_features")
        if isinstance(D, bool) or not isinstance(D, int) or D < 1:
            raise ConfigError(f"box head n_features must be an integer >= 1, got {D!r}", "retrain the box head",
                              param="n_features")
        return {"mean": (D,), "scale": (1,), "w": (D,), "b": (1,)}

    @classmethod
    def from_params(cls, config, params) -> "BoxHead":
        cfg = check_params(cls, config, params)
        try:
            head = cls(**cfg)
        except TypeError as e:
            raise ConfigError(f"bad config for the box head: {e}", "retrain the box head") from None
        if float(np.asarray(params["scale"])[0]) <= 0:
            raise ValueError("param 'scale' must be > 0")
        head.params = {k: np.asarray(v, np.float32).copy() for k, v in params.items()}
        return head

    @staticmethod
    def feature_inputs(whole: np.ndarray, crop: np.ndarray) -> np.ndarray:
        """Serving: pooled whole [N,D] and crop [N,D] features -> X [N,2D]."""
        return np.concatenate([np.asarray(whole, np.float32), np.asarray(crop, np.float32)], axis=1)

    # --- numerics --------------------------------------------------------------------
    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features or len(X) == 0:
            raise ValueError(f"BoxHead expects X [N,{self.n_features}] with N >= 1, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf; recompute or drop those feature rows")
        return X

    def _z(self, X) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.params["mean"]) / float(self.params["scale"][0])

    def decision(self, X) -> np.ndarray:
        """X [N,D] -> logit of malignant [N]."""
        X = self._check_X(X)
        with np.errstate(invalid="ignore", over="ignore"):
            return self._z(X) @ self.params["w"].astype(np.float64) + float(self.params["b"][0])

    def logits(self, X, chunk=None) -> np.ndarray:
        """X [N,D] -> [N,2] logits (0, malignant logit): their softmax is predict_proba."""
        m = self.decision(X)
        return np.stack([np.zeros_like(m), m], axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """X [N,D] -> [N,2] (benign, malignant)."""
        p = sigmoid(self.decision(X))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X) -> HeadOutput:
        return HeadOutput(self.predict_proba(X), None)

    def loss_and_grads(self, X, y, sample_weight=None) -> tuple[float, dict]:
        """Objective C*sum s*logloss + 0.5||w||^2 and its gradient {w [D], b [1]} (mean/scale fixed)."""
        Z = self._z(self._check_X(X))
        y, s = self._check_y(y, len(Z)), self._check_w(sample_weight, len(Z))
        f, g = self._objective(Z, y, s)(np.concatenate([self.params["w"], self.params["b"]]).astype(np.float64))
        return f, {"w": g[:-1], "b": g[-1:]}

    def _objective(self, Z, y, s):
        C = self.C

        def fun(theta):
            w, b = theta[:-1], theta[-1]
            m = Z @ w + b
            loss = np.maximum(m, 0) - m * y + np.log1p(np.exp(-np.abs(m)))  # logloss(sigmoid(m), y), stable
            r = C * s * (sigmoid(m) - y)
            return float(C * (s * loss).sum() + 0.5 * w @ w), np.concatenate([Z.T @ r + w, [r.sum()]])
        return fun

    def _start(self, start) -> np.ndarray:
        """theta0 [D+1]: zeros, or ``start``'s decision function in this head's mean/scale:
        (x - m)/c @ w + b == (x - m')/c' @ (w c'/c) + b + (m' - m)/c @ w."""
        if start is None:
            return np.zeros(self.n_features + 1)
        p = start.params
        c, w = float(p["scale"][0]), p["w"].astype(np.float64)
        b = float(p["b"][0]) + (self.params["mean"].astype(np.float64) - p["mean"]) / c @ w
        return np.concatenate([w * float(self.params["scale"][0]) / c, [b]])

    def _check_y(self, y, n) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,) or not np.isin(y, (0, 1)).all():
            raise ValueError(f"y must be [{n}] of 0 (benign) / 1 (malignant), got shape {y.shape}")
        return y.astype(np.float64)

    def _check_w(self, w, n) -> np.ndarray:
        if w is None:
            return np.ones(n)
        w = np.asarray(w, np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"sample_weight must be finite, >= 0, shape ({n},); got {w.shape}")
        return w

    def fit(self, X, y, sample_weight=None, max_iter=MAX_ITER, tol=TOL, start=None, **ignored) -> dict:
        """Fit in place: mean/scale from X, then w, b by L-BFGS. y [N] 0/1; sample_weight [N] (e.g.
        1 / views per image, so each image counts once). Deterministic (``seed`` and other fit keywords
        are accepted and not used). ``start``: a fitted BoxHead (e.g. on a superset of X) whose decision
        function L-BFGS starts from, re-expressed in this fit's mean/scale; else w = 0, b = 0. The
        problem is strictly convex: the start changes the result only within ``tol``, and the
        iterations needed. Returns a history like logreg's: train_loss/train_acc of the final state,
        iterations, converged."""
        X = self._check_X(X)
        y, s = self._check_y(y, len(X)), self._check_w(sample_weight, len(X))
        if len(np.unique(y)) < 2:
            raise ValueError("the box head needs both benign and malignant training samples")
        X64 = np.asarray(X, np.float64)
        mean = X64.mean(axis=0)
        scale = float(np.sqrt(((X64 - mean) ** 2).mean()))
        self.params["mean"], self.params["scale"] = mean.astype(np.float32), np.array([max(scale, 1e-6)], np.float32)
        Z = self._z(X64)
        theta, self.iterations, converged = lbfgs(self._objective(Z, y, s), self._start(start), max_iter, tol)
        if not np.isfinite(theta).all():
            raise ValueError("box head fit gave non-finite weights")
        self.params["w"], self.params["b"] = theta[:-1].astype(np.float32), theta[-1:].astype(np.float32)
        m = Z @ theta[:-1] + theta[-1]
        p = sigmoid(m)
        ll = -np.mean(y * np.log(np.maximum(p, 1e-300)) + (1 - y) * np.log(np.maximum(1 - p, 1e-300)))
        return {"train_loss": [float(ll)], "train_acc": [float(((m >= 0) == (y == 1)).mean())],
                "val_loss": [], "val_acc": [], "iterations": [self.iterations], "converged": [float(converged)]}
