"""Trainable heads on frozen MobileNetV2 features, in plain NumPy.

PlainHead  pooled features x [N,D] -> relu(x@W1+b1) [N,H] -> @W2 [N,C] -> softmax (Teachable Machine).
MTLHead    grid features X [N,K,D] -> same hidden layer per cell -> mean over cells -> @W2 [N,C],
           plus one lesion logit per cell (auxiliary segmentation task).
Adam, fit, make_head: optimiser, mini-batch loop, rebuild a head from saved config + params.

Init as TM's tfjs trainer, tf.initializers.varianceScaling({}) defaults (scale 1, mode fan_in,
distribution 'normal' = truncated normal): every kernel ~ N(0, 1/fan_in) with draws beyond 2 std
re-drawn; biases 0. All randomness comes from np.random.default_rng(seed) passed in explicitly.
"""
import numpy as np


def _trunc_normal(rng, shape, fan_in, dtype):
    """Truncated normal with std sqrt(1/fan_in); standard draws with |z| > 2 are re-drawn."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return (z * np.sqrt(1.0 / fan_in)).astype(dtype)


def _log_softmax(z):  # z [N,C] -> [N,C], stable
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _bce_logits(s, t):  # elementwise BCE(sigmoid(s), t), stable
    return np.maximum(s, 0) - s * t + np.log1p(np.exp(-np.abs(s)))


def _sigmoid(s):  # stable on both sides
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


def _ce(z, y, w):
    """Weighted softmax CE. z [N,C] logits, y [N] int, w [N] -> (sum(w*ce)/N, dL/dz [N,C], stats)."""
    N = len(y)
    logp = _log_softmax(z)
    ce = -logp[np.arange(N), y]
    dz = np.exp(logp)
    dz[np.arange(N), y] -= 1
    dz *= (w / N)[:, None]
    stats = {"ce": float(ce.mean()), "acc": float((z.argmax(1) == y).mean())}
    return float((w * ce).sum() / N), dz, stats


class Adam:
    """Bias-corrected Adam, Keras form: t += 1; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    alpha = lr*sqrt(1-b2**t)/(1-b1**t); p -= alpha*m/(sqrt(v)+eps). Updates params in place."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
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


class _Head:
    """Shared plumbing: sizes, init, input checks, chunked prediction."""
    ndim = 2  # ndim of X

    def __init__(self, n_features, n_hidden, n_classes, seed, dtype):
        for name, n in (("n_features", n_features), ("n_hidden", n_hidden), ("n_classes", n_classes)):
            if int(n) != n or n < 1:
                raise ValueError(f"{name} must be a positive integer, got {n!r}")
        self.n_features, self.n_hidden, self.n_classes = int(n_features), int(n_hidden), int(n_classes)
        self.dtype = np.dtype(dtype)
        self.params = self._init_params(np.random.default_rng(seed))

    def _init_params(self, rng):  # draw order W1, W2 (then ws for MTL) is part of the seed contract
        D, H, C = self.n_features, self.n_hidden, self.n_classes
        return {"W1": _trunc_normal(rng, (D, H), D, self.dtype), "b1": np.zeros(H, self.dtype),
                "W2": _trunc_normal(rng, (H, C), H, self.dtype)}

    def config(self):
        return {"kind": self.kind, "n_features": self.n_features,
                "n_hidden": self.n_hidden, "n_classes": self.n_classes}

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
        return None, None  # PlainHead has no seg task: ignored

    def logits(self, X, chunk=256):
        """X -> class logits [N,C], in chunks (so a float16 X is never cast whole)."""
        X = self._check_X(X)
        return np.concatenate([self._forward(self._cast(X[i:i + chunk]))[0]
                               for i in range(0, len(X), chunk)])

    def predict_proba(self, X):
        """X -> class probabilities [N,C]."""
        return np.exp(_log_softmax(self.logits(X)))

    def loss_and_grads(self, X, y, sample_weight=None, seg_target=None, seg_weight=None):
        """-> (loss, grads) with grads keyed like params. Loss = sum_n w_n*CE_n / N (+ seg term)."""
        X = self._check_X(X)
        y, w = self._check_y(y, len(X)), self._check_w(sample_weight, len(X))
        t, sw = self._check_seg(X, seg_target, seg_weight)
        loss, grads, _ = self._loss_grads(self._cast(X), y, w, t, sw)
        return loss, grads


class PlainHead(_Head):
    """Teachable Machine head: pooled features x [N,D] -> h = relu(x@W1 + b1) [N,H]
    -> logits = h@W2 [N,C] (NO output bias, as TM) -> softmax.
    params: "W1" [D,H], "b1" [H], "W2" [H,C]. Init (both heads): kernels truncated normal,
    std sqrt(1/fan_in), re-drawn beyond 2 std; biases 0 (tfjs varianceScaling({}), as TM)."""
    kind, ndim = "plain", 2

    def __init__(self, n_features=1280, n_hidden=100, n_classes=3, seed=0, dtype=np.float32):
        super().__init__(n_features, n_hidden, n_classes, seed, dtype)

    def _forward(self, X):  # X [N,D] -> logits [N,C], cache
        A = self._hidden(X)  # [N,H]
        Hh = np.maximum(A, 0)
        return Hh @ self.params["W2"], (A, Hh)

    def _loss_grads(self, X, y, w, t=None, sw=None):
        z, (A, Hh) = self._forward(X)
        loss, dz, stats = _ce(z, y, w)
        dA = (dz @ self.params["W2"].T) * (A > 0)  # [N,H]
        grads = {"W1": X.T @ dA, "b1": dA.sum(0), "W2": Hh.T @ dz}
        return loss, grads, stats


class MTLHead(_Head):
    """Multi-task head on spatial features X [N,K,D] (K = 49 cells of the 7x7 grid):
    Hc = relu(X@W1 + b1) [N,K,H] (the same hidden layer on each cell = 1x1 conv);
    class logits = mean_k(Hc) @ W2 [N,C] (no bias); lesion logit per cell s = Hc@ws + bs [N,K].
    loss = mean_n w_n*CE_n + lam * mean_n (seg_weight_n * mean_k BCE(sigmoid(s_nk), seg_target_nk)).
    params: "W1" [D,H], "b1" [H], "W2" [H,C], "ws" [H], "bs" [1]."""
    kind, ndim = "mtl", 3

    def __init__(self, n_features=1280, n_hidden=100, n_classes=3, lam=1.0, seed=0, dtype=np.float32):
        super().__init__(n_features, n_hidden, n_classes, seed, dtype)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
        self.lam = float(lam)

    def _init_params(self, rng):
        H = self.n_hidden
        return {**super()._init_params(rng), "ws": _trunc_normal(rng, (H,), H, self.dtype),  # kernel [H,1]
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
        return np.concatenate([_sigmoid(self._forward(self._cast(X[i:i + chunk]))[1][0])
                               for i in range(0, len(X), chunk)])

    def _loss_grads(self, X, y, w, t=None, sw=None):
        N, K, D = X.shape
        P = self.params
        z, (s, A, Hc, Hm) = self._forward(X)
        loss, dz, stats = _ce(z, y, w)
        ds = np.zeros_like(s)  # dL/ds [N,K]
        stats["seg"] = 0.0
        if t is not None:
            t = t.astype(self.dtype, copy=False)
            seg = (sw * _bce_logits(s, t).mean(1)).mean()  # mean_n sw_n * mean_k BCE
            loss += self.lam * float(seg)
            stats["seg"] = float(seg)
            ds = (self.lam / (N * K)) * sw[:, None] * (_sigmoid(s) - t)
        # dL/dHc [N,K,H]: class path spreads evenly over cells, seg path per cell
        dHc = (dz @ P["W2"].T / K)[:, None, :] + ds[:, :, None] * P["ws"]
        dA = dHc.reshape(N * K, -1) * (A > 0)
        grads = {"W1": X.reshape(N * K, D).T @ dA, "b1": dA.sum(0), "W2": Hm.T @ dz,
                 "ws": Hc.T @ ds.ravel(), "bs": np.array([ds.sum()], self.dtype)}
        return loss, grads, stats


HEADS = {"plain": PlainHead, "mtl": MTLHead}


def make_head(config, params=None, seed=0):
    """Rebuild a head from head.config() (and optional saved params, checked for names and shapes)."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind not in HEADS:
        raise ValueError(f"config['kind'] must be one of {sorted(HEADS)}, got {kind!r}")
    try:
        head = HEADS[kind](**cfg, seed=seed)
    except TypeError as e:
        raise ValueError(f"bad config for {kind!r} head: {e}") from None
    if params is not None:
        if set(params) != set(head.params):
            raise ValueError(f"params names {sorted(params)} != expected {sorted(head.params)} for {config}")
        for k, v in params.items():
            v = np.asarray(v)
            if v.shape != head.params[k].shape:
                raise ValueError(f"param {k!r} has shape {v.shape}, expected {head.params[k].shape} for {config}")
            head.params[k] = v.astype(head.dtype)  # copy
    return head


def evaluate(head, X, y):
    """-> (mean classification CE, accuracy) over X [N,D] or [N,K,D], y [N]."""
    z = head.logits(X)
    y = head._check_y(y, len(z))
    logp = _log_softmax(z)
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(1) == y).mean())


def fit(head, X, y, *, lr, batch_size, epochs, seed, sample_weight=None, seg_target=None, seg_weight=None,
        X_val=None, y_val=None, on_epoch=None):
    """Mini-batch Adam. Each epoch shuffles with rng.permutation(N), rng = default_rng(seed) made ONCE
    (epochs differ, runs repeat bit-identically). Batches are cast to the head dtype on the fly (X may be float16).
    Returns history, one value per epoch: train_loss / train_acc = batch-size-weighted mean over the epoch's
    batches of the unweighted classification CE / accuracy (so it compares with val); val_loss / val_acc =
    full pass on X_val after the epoch (empty lists without X_val); MTL also train_seg_loss (the seg term
    before lam, 0 without seg_target). on_epoch(epoch, history) is called after each epoch, epoch from 0."""
    X = head._check_X(X)
    N = len(X)
    y, w = head._check_y(y, N), head._check_w(sample_weight, N)
    t, sw = head._check_seg(X, seg_target, seg_weight)
    if int(batch_size) != batch_size or batch_size < 1 or int(epochs) != epochs or epochs < 0 or not lr > 0:
        raise ValueError(f"need batch_size >= 1, epochs >= 0 (ints), lr > 0; got {batch_size}, {epochs}, {lr}")
    if X_val is not None:
        X_val = head._check_X(X_val)
        y_val = head._check_y(y_val, len(X_val))
    opt = Adam(head.params, lr=lr)
    rng = np.random.default_rng(seed)
    buf = np.empty((int(batch_size), *X.shape[1:]), head.dtype)  # reused cast buffer (no 8 MB alloc per batch)
    hist = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    if head.kind == "mtl":
        hist["train_seg_loss"] = []
    for epoch in range(int(epochs)):
        order = rng.permutation(N)
        tot = {"ce": 0.0, "acc": 0.0, "seg": 0.0}
        for i in range(0, N, int(batch_size)):
            b = np.sort(order[i:i + int(batch_size)])  # sorted: faster gather, same batch
            tb = None if t is None else t[b]
            swb = None if sw is None else sw[b]
            xb = buf[:len(b)]
            xb[...] = X[b]  # gather + cast (X may be float16)
            _, grads, stats = head._loss_grads(xb, y[b], w[b], tb, swb)
            opt.step(grads)
            for k in tot:
                tot[k] += stats.get(k, 0.0) * len(b)
        hist["train_loss"].append(tot["ce"] / N)
        hist["train_acc"].append(tot["acc"] / N)
        if head.kind == "mtl":
            hist["train_seg_loss"].append(tot["seg"] / N)
        if X_val is not None:
            vl, va = evaluate(head, X_val, y_val)
            hist["val_loss"].append(vl)
            hist["val_acc"].append(va)
        if on_epoch is not None:
            on_epoch(epoch, hist)
    return hist
