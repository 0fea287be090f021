"""Shared head numerics in plain NumPy: init, losses, the ``Head`` base class, ``fit`` (mini-batch Adam).

Init as TM's tfjs trainer, tf.initializers.varianceScaling({}) defaults (scale 1, mode fan_in,
distribution 'normal' = truncated normal): every kernel ~ N(0, 1/fan_in) with draws beyond 2 std
re-drawn; biases 0. All randomness comes from np.random.default_rng(seed) passed in explicitly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.features.spec import DEFAULT
from busi_lite.heads.optim import Adam, AdamParams

TARGET_SHAPES = {"grid": (DEFAULT.grid * DEFAULT.grid,)}  # per-cell lesion fractions of a sample's view
DIVERGENCE_FACTOR = 1e3  # an epoch's mean loss above this x the loss at init (at least ln C) = diverged


class TrainingError(BusiError):
    """Training failed in a way the user fixes with other hyper-parameters (e.g. divergence)."""


def _diverged(epoch, loss, why="") -> TrainingError:
    return TrainingError(f"training diverged at epoch {epoch + 1} (loss {loss:.4g}{why})",
                         "lower the learning rate", param="lr")


def _params_finite(head) -> bool:
    return all(np.isfinite(p).all() for p in head.params.values())


def trunc_normal(rng, shape, fan_in, dtype):
    """Truncated normal with std sqrt(1/fan_in); standard draws with |z| > 2 are re-drawn."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return (z * np.sqrt(1.0 / fan_in)).astype(dtype)


def log_softmax(z):  # z [N,C] -> [N,C], stable
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def bce_logits(s, t):  # elementwise BCE(sigmoid(s), t), stable
    return np.maximum(s, 0) - s * t + np.log1p(np.exp(-np.abs(s)))


def sigmoid(s):  # stable on both sides
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


def cross_entropy(z, y, w):
    """Weighted softmax CE. z [N,C] logits, y [N] int, w [N] -> (sum(w*ce)/N, dL/dz [N,C], stats)."""
    N = len(y)
    logp = log_softmax(z)
    ce = -logp[np.arange(N), y]
    dz = np.exp(logp)
    dz[np.arange(N), y] -= 1
    dz *= (w / N)[:, None]
    stats = {"ce": float(ce.mean()), "acc": float((z.argmax(1) == y).mean())}
    return float((w * ce).sum() / N), dz, stats


def check_params(cls, config, params) -> dict:
    """Saved ``params`` against the shapes a ``cls`` head with ``config`` has (checked before anything
    is allocated); returns the config without its ``kind``, ready for ``cls(**cfg)``."""
    cfg = dict(config)
    if cfg.pop("kind", cls.kind) != cls.kind:
        raise ConfigError(f"config kind {config.get('kind')!r} is not {cls.kind!r}", "use the matching head")
    shapes = cls.param_shapes(config)
    if set(params) != set(shapes):
        raise ValueError(f"params names {sorted(params)} != expected {sorted(shapes)} for {config}")
    for k, v in params.items():
        if tuple(np.shape(v)) != tuple(shapes[k]):
            raise ValueError(f"param {k!r} has shape {np.shape(v)}, expected {shapes[k]} for {config}")
    return cfg


@dataclass
class HeadOutput:
    """What ``head.predict(X)`` returns: proba [N,C] float; lesion [N,G*G] in [0,1] or None."""
    proba: np.ndarray
    lesion: np.ndarray | None = None


def positive_int(name, n) -> int:
    if (isinstance(n, bool) or not isinstance(n, (int, np.integer, float))
            or (isinstance(n, float) and not math.isfinite(n)) or int(n) != n or n < 1):
        raise ConfigError(f"{name} must be a positive integer, got {n!r}", f"give {name} as an integer >= 1",
                          param=name)
    return int(n)


def positive_float(name, v, fix=None) -> float:
    """v as a float; ConfigError(param=name) unless a finite real number > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {v!r}", fix or f"e.g. {name}=0.01", param=name)
    return float(v)


class Head:
    """Shared plumbing: sizes, init, input checks, chunked prediction, the class-level protocol
    (see the package docstring). Subclasses set ``kind``, ``consumes``, ``ndim`` and implement
    ``_forward(X)`` and ``_loss_grads(X, y, w, t, sw)``."""
    kind = None
    consumes = "pooled"   # "pooled": X [N,D]; "grid": X [N,K,D]
    ndim = 2              # ndim of X
    extra_losses = ()     # names s of extra per-epoch history entries train_{s}_loss
    has_lesion_map = False  # predict() fills HeadOutput.lesion [N,G*G]
    warm_start = False    # fit() accepts start= (a fitted head of the same kind and shape to start from)
    Params = AdamParams     # the head's declared training parameters (busi_lite.common.params)
    targets: ClassVar[dict] = {}  # fit keyword -> what training reads for it from the cache (e.g. "grid")
    frozen_params = ()      # params fitted as statistics, not by the gradient (no gradient check)
    main = True             # offered by train/sweep/select; False: a Model's second head (box)

    def __init__(self, n_features, n_hidden, n_classes, seed, dtype):
        self.n_features, self.n_hidden, self.n_classes = (positive_int("n_features", n_features),
                                                          positive_int("n_hidden", n_hidden),
                                                          positive_int("n_classes", n_classes))
        self.dtype = np.dtype(dtype)
        self.params = self._init_params(np.random.default_rng(seed))

    def _init_params(self, rng):  # draw order W1, W2 (then ws for MTL) is part of the seed contract
        D, H, C = self.n_features, self.n_hidden, self.n_classes
        return {"W1": trunc_normal(rng, (D, H), D, self.dtype), "b1": np.zeros(H, self.dtype),
                "W2": trunc_normal(rng, (H, C), H, self.dtype)}

    def config(self):
        return {"kind": self.kind, "n_features": self.n_features,
                "n_hidden": self.n_hidden, "n_classes": self.n_classes}

    # --- class-level protocol (what training and serving ask of a head class) ---------
    @classmethod
    def build(cls, params, n_features, n_classes, seed):
        """A fresh head from its declared ``params`` (a ``cls.Params``)."""
        return cls(n_features, params.hidden, n_classes, seed=seed)

    @classmethod
    def input_shape(cls, n_features) -> tuple:
        """Shape of one sample of X for a backbone of ``n_features``: pooled (D,), grid (cells, D)."""
        if cls.consumes == "pooled":
            return (n_features,)
        if cls.consumes == "grid":
            return (DEFAULT.grid * DEFAULT.grid, n_features)
        raise NotImplementedError(f"{cls.__name__} consumes {cls.consumes!r}: override input_shape")

    @classmethod
    def feature_inputs(cls, cells):
        """X from backbone features cells [N,K,D] float32 (serving)."""
        if cls.consumes == "pooled":
            return cells.mean(axis=1)
        if cls.consumes == "grid":
            return cells
        raise NotImplementedError(f"{cls.__name__} consumes {cls.consumes!r}: override feature_inputs")

    @classmethod
    def target_shapes(cls) -> dict:
        """{fit keyword: shape of one sample} of the declared ``targets`` (for tests and checks)."""
        return {name: TARGET_SHAPES[source] for name, source in cls.targets.items()}

    @classmethod
    def param_shapes(cls, config) -> dict:
        """{name: shape} of the params a head with this config() has; validates the sizes only."""
        D, H, C = (positive_int(k, config.get(k)) for k in ("n_features", "n_hidden", "n_classes"))
        return {"W1": (D, H), "b1": (H,), "W2": (H, C)}

    @classmethod
    def from_params(cls, config, params):
        """A head with saved ``params``; names and shapes are checked before anything is allocated."""
        cfg = check_params(cls, config, params)
        try:
            head = cls(**cfg, seed=0)
        except TypeError as e:
            raise ConfigError(f"bad config for {cls.kind!r} head: {e}", "check the head config") from None
        for k, v in params.items():
            head.params[k] = np.asarray(v).astype(head.dtype)  # copy
        return head

    # --- boundary checks -------------------------------------------------------------
    def _check_X(self, X):
        """Shape check only (no copy, X may be a big float16 array)."""
        X = np.asarray(X)
        shape = "[N,D] pooled" if self.ndim == 2 else "[N,K,D] spatial (K grid cells)"
        if X.ndim != self.ndim:
            raise ValueError(f"{type(self).__name__} expects {shape} features, got X.shape={X.shape}")
        if X.shape[-1] != self.n_features:
            raise ValueError(f"feature size {X.shape[-1]} != head n_features {self.n_features}")
        if len(X) == 0:
            raise ValueError("X is empty (N=0)")
        return X

    def _cast(self, X):  # batch -> head dtype (NaN/inf are caught in _hidden)
        return np.asarray(X, dtype=self.dtype)

    def _hidden(self, X2):
        """X2 [M,D] -> pre-activation A = X2@W1 + b1 [M,H]. Any NaN/inf in X shows up in A,
        so checking A is the cheap way to validate X (X itself is ~13x bigger)."""
        with np.errstate(invalid="ignore", over="ignore"):  # reported below, as a ValueError
            A = X2 @ self.params["W1"] + self.params["b1"]
        if not np.isfinite(A).all():
            bad_x = not np.isfinite(X2).all()
            raise ValueError("X contains NaN or inf; recompute or drop those feature rows" if bad_x else
                             "hidden layer is not finite: head weights are NaN/inf (training diverged? lower lr)")
        return A

    def _check_y(self, y, N):
        y = np.asarray(y)
        if y.shape != (N,):
            raise ValueError(f"y must have shape ({N},) to match X, got {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or np.array_equal(y, np.round(y))):
            raise ValueError(f"y must hold integer class ids, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"labels must be in [0, {self.n_classes}), got range [{y.min()}, {y.max()}]")
        return y

    def _check_w(self, w, N, name="sample_weight"):
        if w is None:
            return np.ones(N, self.dtype)
        w = np.asarray(w, dtype=self.dtype)
        if w.shape != (N,) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{name} must be finite, >= 0, shape ({N},); got shape {w.shape}")
        return w

    def _check_seg(self, X, seg_target, seg_weight):
        return None, None  # a head without a seg task ignores them

    # --- prediction ------------------------------------------------------------------
    def logits(self, X, chunk=256):
        """X -> class logits [N,C], in chunks (so a float16 X is never cast whole)."""
        X = self._check_X(X)
        return np.concatenate([self._forward(self._cast(X[i:i + chunk]))[0]
                               for i in range(0, len(X), chunk)])

    def predict_proba(self, X):
        """X -> class probabilities [N,C]."""
        return np.exp(log_softmax(self.logits(X)))

    def predict(self, X) -> HeadOutput:
        """X -> HeadOutput(proba [N,C], lesion None)."""
        return HeadOutput(self.predict_proba(X), None)

    def loss_and_grads(self, X, y, sample_weight=None, seg_target=None, seg_weight=None):
        """-> (loss, grads) with grads keyed like params. Loss = sum_n w_n*CE_n / N (+ seg term)."""
        X = self._check_X(X)
        y, w = self._check_y(y, len(X)), self._check_w(sample_weight, len(X))
        t, sw = self._check_seg(X, seg_target, seg_weight)
        loss, grads, _ = self._loss_grads(self._cast(X), y, w, t, sw)
        return loss, grads

    def fit(self, X, y, **kw):
        """Train in place with :func:`fit` (same keyword arguments); returns the history."""
        return fit(self, X, y, **kw)


def evaluate(head, X, y):
    """-> (mean classification CE, accuracy) over X [N,D] or [N,K,D], y [N]."""
    z = head.logits(X)
    y = head._check_y(y, len(z))
    logp = log_softmax(z)
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(1) == y).mean())


def check_hyper(lr, batch_size, epochs) -> tuple[float, int, int]:
    """Validate fit's hyper-parameters: lr > 0 finite, batch_size int >= 1, epochs int >= 1."""
    lr = positive_float("lr", lr, "give the learning rate, e.g. lr=1e-4")
    for name, v in (("batch_size", batch_size), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", f"give {name} >= 1", param=name)
    return lr, int(batch_size), int(epochs)


CAST_ONCE_BYTES = 1 << 30  # fit() casts a float16 X to the head dtype once when the copy is at most this


def _cast_once(head, X):
    """X in the head's dtype, converted once (values unchanged: float16 -> float32 is exact), so that
    no epoch converts it again; X itself when already so or when the copy would exceed CAST_ONCE_BYTES."""
    if X.dtype == head.dtype or X.size * head.dtype.itemsize > CAST_ONCE_BYTES:
        return X
    return X.astype(head.dtype)


def fit(head, X, y, *, lr, batch_size, epochs, seed, sample_weight=None, seg_target=None, seg_weight=None,
        X_val=None, y_val=None, on_epoch=None):
    """Mini-batch Adam. Each epoch shuffles with rng.permutation(N), rng = default_rng(seed) made ONCE
    (epochs differ, runs repeat bit-identically). A float16 X (and X_val) is cast to the head dtype once
    (up to CAST_ONCE_BYTES; beyond, batch by batch).
    Returns history, one value per epoch: train_loss / train_acc = batch-size-weighted mean over the epoch's
    batches of the unweighted classification CE / accuracy (so it compares with val); val_loss / val_acc =
    full pass on X_val after the epoch (empty lists without X_val); for each name s in head.extra_losses
    also train_{s}_loss (MTL: the seg term before lam, 0 without seg_target). on_epoch(epoch, history) is
    called after each epoch, epoch from 0. No defaults for lr/batch_size/epochs: Config holds them.
    Divergence is an error, never a returned head: a non-finite loss or parameter, or an epoch's mean
    loss above DIVERGENCE_FACTOR x the loss at init (the first batch's, at least ln C), raises
    TrainingError (param "lr")."""
    X = head._check_X(X)
    N = len(X)
    y, w = head._check_y(y, N), head._check_w(sample_weight, N)
    t, sw = head._check_seg(X, seg_target, seg_weight)
    lr, batch_size, epochs = check_hyper(lr, batch_size, epochs)
    X = _cast_once(head, X)
    if X_val is not None:
        X_val = _cast_once(head, head._check_X(X_val))
        y_val = head._check_y(y_val, len(X_val))
    opt = Adam(head.params, lr=lr)
    rng = np.random.default_rng(seed)
    buf = np.empty((min(batch_size, N), *X.shape[1:]), head.dtype)  # reused cast buffer; a batch over N is N
    hist = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    for s in head.extra_losses:
        hist[f"train_{s}_loss"] = []
    limit = None  # DIVERGENCE_FACTOR x the loss at init, set by the first batch
    for epoch in range(epochs):
        order = rng.permutation(N)
        tot = {"ce": 0.0, "acc": 0.0, **{s: 0.0 for s in head.extra_losses}}
        for i in range(0, N, batch_size):
            b = np.sort(order[i:i + batch_size])  # sorted: faster gather, same batch
            tb = None if t is None else t[b]
            swb = None if sw is None else sw[b]
            xb = buf[:len(b)]
            if X.dtype == head.dtype:
                np.take(X, b, axis=0, out=xb, mode="clip")   # straight into the buffer (b is in range;
                # mode "raise" would gather into a temporary first)
            else:
                xb[...] = X[b]  # gather + cast (X float16 over CAST_ONCE_BYTES)
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # reported below as divergence
                    _, grads, stats = head._loss_grads(xb, y[b], w[b], tb, swb)
            except ValueError:
                if _params_finite(head):
                    raise
                raise _diverged(epoch, float("nan"), ", weights NaN/inf") from None
            if not math.isfinite(stats["ce"]):
                raise _diverged(epoch, stats["ce"])
            if limit is None:
                limit = DIVERGENCE_FACTOR * max(stats["ce"], math.log(head.n_classes))
            opt.step(grads)
            for k in tot:
                tot[k] += stats.get(k, 0.0) * len(b)
        loss = tot["ce"] / N
        if not math.isfinite(loss) or loss > limit or not _params_finite(head):
            raise _diverged(epoch, loss, f" > {limit:.3g}" if loss > limit else "")
        hist["train_loss"].append(loss)
        hist["train_acc"].append(tot["acc"] / N)
        for s in head.extra_losses:
            hist[f"train_{s}_loss"].append(tot[s] / N)
        if X_val is not None:
            vl, va = evaluate(head, X_val, y_val)
            hist["val_loss"].append(vl)
            hist["val_acc"].append(va)
        if on_epoch is not None:
            on_epoch(epoch, hist)
    return hist
