"""Tests for busi_lite.heads: gradients, Adam, learning, determinism, save/load, validation, registry."""
import json

import numpy as np
import pytest

from busi_lite.common.errors import ConfigError
from busi_lite.heads import (
    HEADS,
    Adam,
    Head,
    HeadOutput,
    MTLHead,
    PlainHead,
    evaluate,
    fit,
    get_head,
    make_head,
    register_head,
)

D, H, C, K, N = 7, 5, 3, 4, 6  # small sizes for gradient checks


def _num_grad(f, p, eps=1e-6):
    """Central differences of scalar f() w.r.t. array p (perturbed in place)."""
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + eps
        fp = f()
        p[i] = old - eps
        fm = f()
        p[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def _check_grads(head, loss_fn, zero_ok=()):
    _, grads = loss_fn()
    assert set(grads) == set(head.params)
    for k, p in head.params.items():
        num = _num_grad(lambda: loss_fn()[0], p)
        ana = grads[k]
        assert ana.shape == p.shape, k
        rel = np.abs(num - ana).max() / max(np.abs(num).max() + np.abs(ana).max(), 1e-12)
        assert rel < 1e-6, f"{k}: relative error {rel:.2e}"
        assert k in zero_ok or np.abs(ana).max() > 1e-8, f"{k}: gradient is all zero, check is vacuous"


def test_plain_gradients():
    rng = np.random.default_rng(1)
    head = PlainHead(D, H, C, seed=2, dtype=np.float64)
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, N)
    w = rng.uniform(0, 2, N)
    w[0] = 0.0
    _check_grads(head, lambda: head.loss_and_grads(X, y, sample_weight=w))


def test_mtl_gradients():
    rng = np.random.default_rng(3)
    head = MTLHead(D, H, C, lam=0.7, seed=4, dtype=np.float64)
    head.params["bs"][:] = 0.3  # nonzero bias so every path is exercised
    X, y = rng.standard_normal((N, K, D)), rng.integers(0, C, N)
    w, t, sw = rng.uniform(0, 2, N), rng.uniform(0, 1, (N, K)), rng.uniform(0, 2, N)
    sw[1] = 0.0  # a sample without a mask
    _check_grads(head, lambda: head.loss_and_grads(X, y, sample_weight=w, seg_target=t, seg_weight=sw))
    _check_grads(head, lambda: head.loss_and_grads(X, y), zero_ok=("ws", "bs"))  # classification only


def test_loss_values_match_definition():
    """The loss is the documented formula, computed here independently from probabilities."""
    rng = np.random.default_rng(5)
    X, y, w = rng.standard_normal((N, K, D)), rng.integers(0, C, N), rng.uniform(0, 2, N)
    t, sw = rng.uniform(0, 1, (N, K)), rng.uniform(0, 2, N)
    head = MTLHead(D, H, C, lam=0.5, seed=0, dtype=np.float64)
    p, q = head.predict_proba(X), head.lesion_map(X)
    ce = -np.log(p[np.arange(N), y])
    bce = -(t * np.log(q) + (1 - t) * np.log(1 - q))
    want = (w * ce).sum() / N + 0.5 * np.mean(sw * bce.mean(1))
    assert head.loss_and_grads(X, y, w, seg_target=t, seg_weight=sw)[0] == pytest.approx(want, rel=1e-12)
    plain = PlainHead(D, H, C, seed=0, dtype=np.float64)
    p = plain.predict_proba(X[:, 0])
    assert np.allclose(p.sum(1), 1)
    assert plain.loss_and_grads(X[:, 0], y, w)[0] == pytest.approx((w * -np.log(p[np.arange(N), y])).mean())


def test_zero_seg_weight_means_no_seg_loss():
    rng = np.random.default_rng(6)
    head = MTLHead(D, H, C, seed=0, dtype=np.float64)
    X, y, t = rng.standard_normal((N, K, D)), rng.integers(0, C, N), rng.uniform(0, 1, (N, K))
    l0, g0 = head.loss_and_grads(X, y)
    l1, g1 = head.loss_and_grads(X, y, seg_target=t, seg_weight=np.zeros(N))
    assert l0 == l1 and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_adam_two_steps_by_hand():
    p = {"w": np.array([1.0, -2.0])}
    opt = Adam(p, lr=0.1)  # beta1=0.9, beta2=0.999, eps=1e-7
    opt.step({"w": np.array([0.5, -1.0])})
    # t=1: m=0.1g, v=0.001g^2, alpha=0.1*sqrt(0.001)/0.1 -> step ~ lr*sign(g)
    assert np.allclose(p["w"], [0.9000006324515321, -1.900000316226766], rtol=0, atol=1e-12)
    opt.step({"w": np.array([0.1, 0.2])})
    # t=2: m=[0.055,-0.07], v=[0.00025975,0.001039], alpha=0.1*sqrt(0.001999)/0.19
    assert np.allclose(p["w"], [0.819697032869824, -1.8488978670466378], rtol=0, atol=1e-12)


def test_init_is_truncated_normal_fan_in():
    head = MTLHead(1280, 100, 3, seed=0)
    W1, W2, ws = head.params["W1"], head.params["W2"], head.params["ws"]
    assert W1.dtype == np.float32 and not head.params["b1"].any() and not head.params["bs"].any()
    for W, fan_in in ((W1, 1280), (W2, 100), (ws, 100)):
        assert np.abs(W).max() <= 2 * np.sqrt(1 / fan_in) + 1e-7
    # a N(0,1) truncated at +-2 has std 0.8796
    assert W1.std() == pytest.approx(0.8796 / np.sqrt(1280), rel=0.02)


def _blobs(rng, n, d, k=None):
    """3 well-separated Gaussian blobs in d dims; with k, every one of k cells is a noisy copy."""
    centers = rng.standard_normal((3, d)) * 4
    y = rng.integers(0, 3, n)
    shape = (n, d) if k is None else (n, k, d)
    mu = centers[y] if k is None else centers[y][:, None, :]
    return (mu + rng.standard_normal(shape)).astype(np.float32), y


@pytest.mark.parametrize("kind", ["plain", "mtl"])
def test_learns_separable_blobs(kind):
    rng = np.random.default_rng(7)
    X, y = _blobs(rng, 300, 20, None if kind == "plain" else 5)
    head = PlainHead(20, 16, 3, seed=0) if kind == "plain" else MTLHead(20, 16, 3, seed=0)
    seen = []
    hist = fit(head, X, y, lr=1e-2, batch_size=32, epochs=30, seed=0, X_val=X[:50], y_val=y[:50],
               on_epoch=lambda e, h: seen.append((e, len(h["train_loss"]))))
    assert seen == [(e, e + 1) for e in range(30)]
    assert all(len(v) == 30 for v in hist.values())
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist["train_acc"][-1] >= 0.99 and evaluate(head, X, y)[1] >= 0.99
    assert ("train_seg_loss" in hist) == (kind == "mtl")


def test_same_seed_bit_identical_different_seed_differs():
    rng = np.random.default_rng(8)
    X, y = _blobs(rng, 100, 6, k=4)
    t = (rng.random((100, 4)) > 0.5).astype(np.float32)

    def run(seed):
        head = MTLHead(6, 8, 3, seed=seed)
        hist = fit(head, X, y, lr=1e-2, batch_size=16, epochs=3, seed=seed, seg_target=t)
        return head.params, hist

    (a, ha), (b, hb), (c, _) = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a) and ha == hb
    assert not np.array_equal(a["W1"], c["W1"])
    # fit's seed alone (same init) also changes the result: the shuffles differ
    h1, h2 = PlainHead(6, 8, 3, seed=0), PlainHead(6, 8, 3, seed=0)
    fit(h1, X[:, 0], y, lr=1e-2, batch_size=16, epochs=2, seed=0)
    fit(h2, X[:, 0], y, lr=1e-2, batch_size=16, epochs=2, seed=1)
    assert not np.array_equal(h1.params["W1"], h2.params["W1"])


def test_float16_input_same_as_float32():
    rng = np.random.default_rng(9)
    X16 = rng.standard_normal((40, 4, 6)).astype(np.float16)
    y = rng.integers(0, 3, 40)
    h16, h32 = MTLHead(6, 5, 3, seed=0), MTLHead(6, 5, 3, seed=0)
    fit(h16, X16, y, lr=1e-2, batch_size=8, epochs=2, seed=0)
    fit(h32, X16.astype(np.float32), y, lr=1e-2, batch_size=8, epochs=2, seed=0)
    assert all(np.array_equal(h16.params[k], h32.params[k]) for k in h16.params)


def test_mtl_learns_lesion_map():
    """A cell is 'lesion' iff feature 0 carries a +6 marker; the lesion map must find it."""
    rng = np.random.default_rng(10)

    def data(n):
        X = rng.standard_normal((n, 9, 16)).astype(np.float32)
        t = (rng.random((n, 9)) < 0.3).astype(np.float32)
        X[..., 0] += 6 * t  # 3 std from the threshold: Bayes error ~0.1%
        return X, rng.integers(0, 3, n), t

    X, y, t = data(200)
    sw = np.ones(200)
    sw[::4] = 0  # some samples without masks
    head = MTLHead(16, 16, 3, lam=1.0, seed=0)
    hist = fit(head, X, y, lr=1e-2, batch_size=32, epochs=40, seed=0, seg_target=t, seg_weight=sw)
    assert hist["train_seg_loss"][-1] < 0.5 * hist["train_seg_loss"][0]
    Xt, _, tt = data(100)
    q = head.lesion_map(Xt)
    assert q.shape == (100, 9) and q.min() >= 0 and q.max() <= 1
    assert ((q > 0.5) == (tt > 0.5)).mean() >= 0.97


@pytest.mark.parametrize("kind", ["plain", "mtl"])
def test_make_head_round_trip(kind):
    rng = np.random.default_rng(11)
    head = PlainHead(8, 4, 3, seed=3) if kind == "plain" else MTLHead(8, 4, 3, lam=0.25, seed=3)
    X = rng.standard_normal((10, 8) if kind == "plain" else (10, 3, 8)).astype(np.float32)
    fit(head, X, rng.integers(0, 3, 10), lr=1e-2, batch_size=4, epochs=2, seed=0)
    cfg = json.loads(json.dumps(head.config()))
    saved = {k: v.copy() for k, v in head.params.items()}
    head2 = make_head(cfg, saved, seed=99)
    assert head2.config() == head.config() and head2.kind == kind
    assert np.array_equal(head2.predict_proba(X), head.predict_proba(X))
    if kind == "mtl":
        assert cfg["lam"] == 0.25 and np.array_equal(head2.lesion_map(X), head.lesion_map(X))
    bad = dict(saved, W1=np.zeros((9, 4), np.float32))
    with pytest.raises(ValueError, match="'W1' has shape"):
        make_head(cfg, bad)
    with pytest.raises(ValueError, match="names"):
        make_head(cfg, {k: v for k, v in saved.items() if k != "W2"})
    with pytest.raises(ValueError, match="kind"):
        make_head({**cfg, "kind": "resnet"})
    with pytest.raises(ValueError, match="bad config"):
        make_head({**cfg, "n_layers": 3})


def test_input_validation():
    plain, mtl = PlainHead(D, H, C), MTLHead(D, H, C)
    X, X3, y = np.zeros((4, D)), np.zeros((4, K, D)), np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="pooled"):
        plain.predict_proba(X3)
    with pytest.raises(ValueError, match="spatial"):
        mtl.loss_and_grads(X, y)
    with pytest.raises(ValueError, match="n_features"):
        plain.predict_proba(np.zeros((4, D + 1)))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        plain.loss_and_grads(X, [0, 1, 3, 0])
    with pytest.raises(ValueError, match="integer"):
        plain.loss_and_grads(X, [0.5, 1, 2, 0])
    with pytest.raises(ValueError, match="shape"):
        plain.loss_and_grads(X, y[:3])
    with pytest.raises(ValueError, match="sample_weight"):
        plain.loss_and_grads(X, y, sample_weight=[1, 1, -1, 1])
    Xn = X.copy()
    Xn[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plain.predict_proba(Xn)
    with pytest.raises(ValueError, match="NaN"):
        fit(plain, Xn, y, lr=1e-3, batch_size=2, epochs=1, seed=0)
    X3n = X3.astype(np.float16)
    X3n[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        mtl.lesion_map(X3n)
    with pytest.raises(ValueError, match="seg_target"):
        mtl.loss_and_grads(X3, y, seg_target=np.zeros((4, K + 1)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mtl.loss_and_grads(X3, y, seg_target=np.full((4, K), 2.0))
    with pytest.raises(ValueError, match="without seg_target"):
        mtl.loss_and_grads(X3, y, seg_weight=np.ones(4))
    with pytest.raises(ValueError, match="batch_size"):
        fit(plain, X, y, lr=1e-3, batch_size=0, epochs=1, seed=0)
    for kw, param in ((dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(epochs=0), "epochs"),
                      (dict(batch_size=2.5), "batch_size")):
        args = {**dict(lr=1e-3, batch_size=2, epochs=1, seed=0), **kw}
        with pytest.raises(ConfigError, match=param) as e:
            fit(plain, X, y, **args)
        assert e.value.param == param
    with pytest.raises(TypeError):
        fit(plain, X, y, batch_size=2, epochs=1, seed=0)  # no default lr: Config holds the defaults
    with pytest.raises(ConfigError, match="lam") as e:
        MTLHead(D, H, C, lam=-1)
    assert e.value.param == "lam"
    with pytest.raises(ValueError, match="n_hidden"):
        PlainHead(D, 0, C)


def test_extreme_logits_stay_finite():
    head = MTLHead(D, H, C, seed=0, dtype=np.float64)
    X = np.full((2, K, D), 1e4)
    loss, grads = head.loss_and_grads(X, [0, 2], seg_target=np.ones((2, K)))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    assert np.isfinite(head.predict_proba(X)).all()


# --------------------------------------------------------------------------- #
# registry and protocol
# --------------------------------------------------------------------------- #
def test_registry_lists_kinds_and_refuses_unknown():
    assert HEADS["plain"] is PlainHead and HEADS["mtl"] is MTLHead
    assert get_head("mtl") is MTLHead
    with pytest.raises(ConfigError, match="plain") as e:
        get_head("resnet")
    assert e.value.param == "head" and "mtl" in str(e.value)

    class Nameless(Head):
        pass

    with pytest.raises(TypeError, match="kind"):
        register_head(Nameless)

    class Clash(PlainHead):
        kind = "plain"

    with pytest.raises(TypeError, match="already registered"):
        register_head(Clash)
    assert HEADS["plain"] is PlainHead


def test_predict_gives_head_output():
    rng = np.random.default_rng(12)
    X3 = rng.standard_normal((5, K, D))
    out = MTLHead(D, H, C, seed=0).predict(X3)
    assert isinstance(out, HeadOutput) and out.proba.shape == (5, C) and out.lesion.shape == (5, K)
    assert np.allclose(out.proba.sum(1), 1) and MTLHead.has_lesion_map and not PlainHead.has_lesion_map
    p = PlainHead(D, H, C, seed=0).predict(X3[:, 0])
    assert p.lesion is None and p.proba.shape == (5, C)
    # serving builds X from backbone cells via the class: pooled heads average, grid heads take cells
    cells = rng.standard_normal((2, K, D))
    assert np.array_equal(PlainHead.feature_inputs(cells), cells.mean(1))
    assert MTLHead.feature_inputs(cells) is cells


def test_saved_shapes_checked_before_allocating():
    cfg = PlainHead(D, H, C, seed=0).config()
    params = {k: v for k, v in PlainHead(D, H, C, seed=0).params.items()}
    huge = dict(cfg, n_hidden=10**12)  # 1280 x 1e12 floats would be ~5 TB
    assert PlainHead.param_shapes(huge)["W1"] == (D, 10**12)  # arithmetic only
    with pytest.raises(ValueError, match="'W1' has shape"):
        make_head(huge, params)
    with pytest.raises(ConfigError, match="n_hidden"):
        PlainHead.param_shapes(dict(cfg, n_hidden=1.5))
    with pytest.raises(ConfigError, match="n_hidden"):
        PlainHead.param_shapes(dict(cfg, n_hidden=float("inf")))
    assert MTLHead.param_shapes({**cfg, "kind": "mtl", "lam": 1.0})["ws"] == (H,)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_mtl_lam_checked_by_its_declaration(bad):
    """MTLHead validates lam through MTLParams: a negative, non-finite or non-number lam names 'lam'."""
    with pytest.raises(ConfigError) as e:
        MTLHead(8, 4, 3, lam=bad)
    assert e.value.param == "lam"
