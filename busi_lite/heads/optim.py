"""The heads' optimisers: mini-batch Adam (with its declared parameters) and one full-batch L-BFGS."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_lite.common.params import Interval, Params, param


@dataclass(frozen=True)
class AdamParams(Params):
    """What a head trained by mini-batch Adam (heads.base.fit) declares."""
    lr: float = param(1e-4, Interval(float, 0, None, open="low"), "Adam learning rate (> 0).", token="lr{:g}", always=True)
    batch: int = param(32, Interval(int, 1), "Mini-batch size.", token="b{}", always=True)
    epochs: int = param(50, Interval(int, 1), "Passes over the training samples.", token="e{}", always=True)

    def fit_kwargs(self) -> dict:
        """Keyword arguments of heads.base.fit."""
        return {"lr": self.lr, "batch_size": self.batch, "epochs": self.epochs}


class Adam:
    """Bias-corrected Adam, Keras form: t += 1; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    alpha = lr*sqrt(1-b2**t)/(1-b1**t); p -= alpha*m/(sqrt(v)+eps). Updates params in place."""

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-7):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self, grads):
        self.t += 1
        alpha = self.lr * (1 - self.b2 ** self.t) ** 0.5 / (1 - self.b1 ** self.t)  # python float
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= self.b1; m += (1 - self.b1) * g  # in place: no new arrays per step
            v *= self.b2; v += (1 - self.b2) * g * g
            p -= alpha * m / (np.sqrt(v) + self.eps)


def lbfgs(fun, x0, max_iter=1000, tol=1e-6, memory=10):
    """Minimise a smooth function. fun(x) -> (value, gradient); x0 [P] float64.
    Two-loop recursion, Armijo backtracking from step 1 (the first step is scaled to
    length 1). Stops when the largest gradient entry is below ``tol``.
    Returns (x, iterations, converged)."""
    x = np.asarray(x0, np.float64).copy()
    f, g = fun(x)
    S, Y = [], []
    for it in range(1, max_iter + 1):
        if np.abs(g).max() < tol:
            return x, it - 1, True
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(S), reversed(Y)):
            a = (s @ q) / (yv @ s)
            alphas.append(a)
            q -= a * yv
        q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) if S else 1.0 / max(np.linalg.norm(g), 1e-12)
        for (s, yv), a in zip(zip(S, Y), reversed(alphas)):
            q += s * (a - (yv @ q) / (yv @ s))
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction: restart from the gradient
            S, Y, d = [], [], -g / max(np.linalg.norm(g), 1e-12)
            slope = g @ d
        step = 1.0
        for _ in range(40):
            f_new, g_new = fun(x + step * d)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            return x, it, False  # no decrease possible at float precision
        s, yv = step * d, g_new - g
        if s @ yv > 1e-12:
            S.append(s)
            Y.append(yv)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        x, f, g = x + s, f_new, g_new
    return x, max_iter, bool(np.abs(g).max() < tol)
