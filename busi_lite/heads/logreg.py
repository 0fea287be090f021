"""LogRegHead: multinomial logistic regression on pooled features (kind "logreg").

Model: pooled features x [N,D] -> logits z = (x / scale) @ W + b [N,C] -> softmax.
params: "W" [D,C], "b" [C], "scale" [1]. ``scale`` is ONE global number fitted on the
training features (the standard deviation of all their values), so the L2 strength means
the same whatever the backbone's feature magnitude.

Objective, scikit-learn's LogisticRegression(C=C) (multinomial, intercept not penalised)
divided by C*N so it is a mean loss:

    L(W, b) = sum_n w_n * CE_n / N  +  ||W||^2 / (2 * C * N)

(same minimiser as sklearn's  C * sum_n w_n * CE_n + ||W||^2 / 2). C ~ 0.01 is strong L2.

Training: full-batch L-BFGS (:func:`busi_lite.heads.optim.lbfgs`, memory 10, Armijo backtracking) from W = 0, b = 0,
on centred features (x / scale - mean: a reparameterisation with the same optimum
since b is not penalised; b is folded back afterwards), until the largest gradient entry is
below ``tol`` or ``max_iter`` iterations. Deterministic (no seed used);
the problem is strictly convex, so the result does not depend on the start.
Its one declared training parameter is C (``LogRegParams``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_lite.common.params import Interval, Params, param
from busi_lite.features.spec import DEFAULT
from busi_lite.heads.base import Head, HeadOutput, TrainingError, evaluate, log_softmax, positive_int
from busi_lite.heads.optim import lbfgs
from busi_lite.heads.registry import register_head


@dataclass(frozen=True)
class LogRegParams(Params):
    C: float = param(0.01, Interval(float, 0, None, open="low"),
                     "Inverse L2 strength (scikit-learn's C; smaller = stronger).", token="C{:g}")

    def fit_kwargs(self) -> dict:
        return {}


@register_head
class LogRegHead(Head):
    """Softmax regression on pooled features scaled by one global number; strong L2 (see module doc)."""
    kind, consumes, ndim = "logreg", "pooled", 2
    work_dtype = np.float64  # of the scaled features inside fit
    Params = LogRegParams
    frozen_params = ("scale",)  # one number fitted on the training features, not by the gradient
    warm_start = True  # fit(start=another fitted LogRegHead)

    def __init__(self, n_features=DEFAULT.n_features, n_classes=3, C=0.01, seed=0, dtype=np.float64, tol=1e-5,
                 max_iter=1000):
        self.n_features = positive_int("n_features", n_features)
        self.n_classes = positive_int("n_classes", n_classes)
        self.C = LogRegParams(C=C).C  # the declared constraint (C > 0, finite)
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.dtype = np.dtype(dtype)
        self.n_hidden = 0  # no hidden layer (head-size tables print 0)
        self.params = {"W": np.zeros((self.n_features, self.n_classes), self.dtype),
                       "b": np.zeros(self.n_classes, self.dtype), "scale": np.ones(1, self.dtype)}

    def config(self):
        return {"kind": self.kind, "n_features": self.n_features, "n_classes": self.n_classes, "C": self.C}

    @classmethod
    def build(cls, params, n_features, n_classes, seed):
        """A fresh head from its declared ``params`` (C)."""
        return cls(n_features, n_classes, C=params.C, seed=seed)

    @classmethod
    def param_shapes(cls, config) -> dict:
        D, C = (positive_int(k, config.get(k)) for k in ("n_features", "n_classes"))
        return {"W": (D, C), "b": (C,), "scale": (1,)}

    # --- numerics ------------------------------------------------------------------
    def _forward(self, X):  # X [N,D] (head dtype) -> logits [N,C], cache
        with np.errstate(invalid="ignore", over="ignore"):
            z = (X / self.params["scale"][0]) @ self.params["W"] + self.params["b"]
        if not np.isfinite(z).all():
            raise ValueError("X contains NaN or inf; recompute or drop those feature rows"
                             if not np.isfinite(X).all() else "logits are not finite: head weights are NaN/inf")
        return z, None

    def objective(self, Xs, y, w, W, b):
        """Mean weighted CE + ||W||^2/(2 C N) on already scaled Xs [N,D] -> (loss, dW [D,C], db [C])."""
        N = len(Xs)
        z = (Xs @ W.astype(Xs.dtype)).astype(np.float64) + b
        logp = log_softmax(z)
        loss = float(-(w * logp[np.arange(N), y]).sum() / N + (W * W).sum() / (2 * self.C * N))
        dz = np.exp(logp)
        dz[np.arange(N), y] -= 1
        dz *= (w / N)[:, None]
        return loss, (Xs.T @ dz.astype(Xs.dtype)).astype(np.float64) + W / (self.C * N), dz.sum(0)

    def _loss_grads(self, X, y, w, t=None, sw=None):
        """Loss and gradients w.r.t. W and b at the current params (scale held fixed)."""
        Xs = X / self.params["scale"][0]
        loss, dW, db = self.objective(Xs, y, w, self.params["W"], self.params["b"])
        z = Xs @ self.params["W"] + self.params["b"]
        ce = float(-log_softmax(z)[np.arange(len(y)), y].mean())
        return loss, {"W": dW, "b": db, "scale": np.zeros(1, self.dtype)}, {"ce": ce, "acc": float((z.argmax(1) == y).mean())}

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None, start=None, **ignored):
        """Fit to convergence (see module doc). ``lr``, ``batch_size``, ``epochs``, ``seed`` and
        segmentation targets are accepted and ignored. ``start``: a fitted LogRegHead of the same
        shape (e.g. on a superset of X) whose logits L-BFGS starts from, re-expressed in this fit's
        scale and centring; else W = 0, b = 0 (the problem is strictly convex: the start changes the
        result only within ``tol``). Returns a history like base.fit's (one entry: the final state)
        plus ``iterations`` and ``converged``."""
        X = self._check_X(X)
        N = len(X)
        y, w = self._check_y(y, N), self._check_w(sample_weight, N).astype(np.float64)
        Xd = np.asarray(X, np.float64)
        if not np.isfinite(Xd).all():
            raise ValueError("X contains NaN or inf; recompute or drop those feature rows")
        scale = float(Xd.std())
        scale = scale if scale > 0 else 1.0
        mu = Xd.mean(axis=0) / scale
        Xs = Xd / scale - mu  # centred: the same optimum (b is not penalised), far better conditioned
        D, K = self.n_features, self.n_classes
        Xs = Xs.astype(self.work_dtype)

        def fun(theta):
            W, b = theta[:D * K].reshape(D, K), theta[D * K:]
            loss, dW, db = self.objective(Xs, y, w, W, b)
            return loss, np.concatenate([dW.ravel(), db])

        theta0 = np.zeros(D * K + K)
        if start is not None:  # (x/s0) @ W0 + b0 == (x/s - mu) @ (W0 s/s0) + b0 + mu @ (W0 s/s0)
            W0 = np.asarray(start.params["W"], np.float64) * scale / float(start.params["scale"][0])
            theta0 = np.concatenate([W0.ravel(), np.asarray(start.params["b"], np.float64) + mu @ W0])
        theta, it, converged = lbfgs(fun, theta0, self.max_iter, self.tol)
        W, b = theta[:D * K].reshape(D, K), theta[D * K:]
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise TrainingError("logistic regression did not converge (weights NaN/inf)",
                                "check the features for extreme values, or use a smaller C", param="C")
        self.params = {"W": W.astype(self.dtype), "b": (b - mu @ W).astype(self.dtype),
                       "scale": np.array([scale], self.dtype)}
        z = Xs @ W + b
        logp = log_softmax(z)
        hist = {"train_loss": [float(-logp[np.arange(N), y].mean())], "train_acc": [float((z.argmax(1) == y).mean())],
                "val_loss": [], "val_acc": [], "iterations": [it], "converged": [float(converged)],
                "objective": [self.objective(Xs, y, w, W, b)[0]]}
        if X_val is not None and len(X_val):
            vl, va = evaluate(self, X_val, y_val)
            hist["val_loss"].append(vl)
            hist["val_acc"].append(va)
        return hist

    def predict(self, X) -> HeadOutput:
        return HeadOutput(self.predict_proba(X), None)
