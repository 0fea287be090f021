"""Tests for busi_lite.heads.logreg: gradient, agreement with scikit-learn, registry, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from busi_lite.common.errors import ConfigError
from busi_lite.heads import HEADS, LogRegHead, get_head, make_head
from busi_lite.heads.optim import lbfgs
from busi_lite.model.config import Config


def _data(n=240, d=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = np.abs(rng.standard_normal((n, d)) * 0.5 + 2.0)  # positive, offset like pooled ReLU features
    X[:, :5] += np.eye(3)[y] @ rng.standard_normal((3, 5))
    return X.astype(np.float32), y


def test_gradient_matches_finite_differences():
    X, y = _data(60, 8)
    h = LogRegHead(8, 3, C=0.05)
    rng = np.random.default_rng(1)
    Xs = X.astype(np.float64) / 1.7
    w = rng.uniform(0.5, 2.0, len(y))
    W, b = rng.standard_normal((8, 3)) * 0.3, rng.standard_normal(3) * 0.3
    _, dW, db = h.objective(Xs, y, w, W, b)
    eps = 1e-6
    for i, j in [(0, 0), (3, 1), (7, 2)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[i, j] += eps
        Wm[i, j] -= eps
        num = (h.objective(Xs, y, w, Wp, b)[0] - h.objective(Xs, y, w, Wm, b)[0]) / (2 * eps)
        assert dW[i, j] == pytest.approx(num, rel=1e-5, abs=1e-8)
    for j in range(3):
        bp, bm = b.copy(), b.copy()
        bp[j] += eps
        bm[j] -= eps
        num = (h.objective(Xs, y, w, W, bp)[0] - h.objective(Xs, y, w, W, bm)[0]) / (2 * eps)
        assert db[j] == pytest.approx(num, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_matches_scikit_learn(C):
    """Same objective as sklearn's LogisticRegression(C) on X / scale: probabilities agree."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = _data()
    w = np.where(y == 2, 2.0, 1.0)
    h = LogRegHead(X.shape[1], 3, C=C, tol=1e-8)
    hist = h.fit(X, y, sample_weight=w)
    assert hist["converged"] == [1.0]
    scale = h.params["scale"][0]
    assert scale == pytest.approx(X.astype(np.float64).std(), rel=1e-6)
    ref = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X / scale, y, sample_weight=w)
    np.testing.assert_allclose(h.predict_proba(X), ref.predict_proba(X / scale), atol=2e-4)
    np.testing.assert_allclose(h.params["W"], ref.coef_.T, atol=2e-3 * max(1.0, np.abs(ref.coef_).max()))


def test_strong_l2_shrinks_and_fit_is_deterministic():
    X, y = _data()
    strong, weak = LogRegHead(X.shape[1], 3, C=1e-4), LogRegHead(X.shape[1], 3, C=10.0)
    strong.fit(X, y)
    weak.fit(X, y)
    assert np.abs(strong.params["W"]).sum() < np.abs(weak.params["W"]).sum() / 10
    again = LogRegHead(X.shape[1], 3, C=1e-4)
    again.fit(X, y)
    for k in strong.params:
        np.testing.assert_array_equal(strong.params[k], again.params[k])
    # it learns: training accuracy well above chance (~0.33)
    assert (weak.predict_proba(X).argmax(1) == y).mean() > 0.8


def test_registered_built_from_config_and_restored():
    assert get_head("logreg") is LogRegHead and HEADS["logreg"] is LogRegHead
    h = LogRegHead.build(Config.build(head="logreg", C=0.5).params, 40, 3, seed=0)
    assert h.config() == {"kind": "logreg", "n_features": 40, "n_classes": 3, "C": 0.5}
    X, y = _data()
    h.fit(X, y)
    assert LogRegHead.param_shapes(h.config()) == {"W": (40, 3), "b": (3,), "scale": (1,)}
    h2 = make_head(h.config(), {k: v.copy() for k, v in h.params.items()})
    np.testing.assert_array_equal(h2.predict_proba(X), h.predict_proba(X))
    with pytest.raises(ValueError, match="shape"):
        make_head(h.config(), {"W": np.zeros((41, 3)), "b": np.zeros(3), "scale": np.ones(1)})


@pytest.mark.parametrize("C", [0, -1, float("nan"), True, "0.1"])
def test_bad_C_is_named(C):
    with pytest.raises(ConfigError) as e:
        Config.build(head="logreg", C=C)
    assert e.value.param == "C"
    with pytest.raises(ConfigError) as e:
        LogRegHead(10, 3, C=C)
    assert e.value.param == "C"


def test_nan_features_refused():
    X, y = _data()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LogRegHead(X.shape[1], 3).fit(X, y)


def test_lbfgs_on_a_quadratic():
    A = np.diag([1.0, 10.0, 100.0])
    x, it, ok = lbfgs(lambda v: (0.5 * v @ A @ v - v.sum(), A @ v - 1), np.zeros(3), tol=1e-10)
    assert ok and it < 50
    np.testing.assert_allclose(x, 1 / np.diag(A), rtol=1e-8)


def test_warm_start_keeps_the_logits_and_reaches_the_same_optimum():
    """fit(start=head): L-BFGS starts from ``head``'s logits re-expressed in this fit's scale and
    centring, and ends where a fit from zero ends (strictly convex), within the solver's tolerance."""
    rng = np.random.default_rng(3)
    X = np.abs(rng.normal(size=(300, 30)) @ rng.normal(size=(30, 30))) + 0.5
    y = (X[:, 0] - X[:, 1] + rng.normal(size=300) > 0).astype(int) + (X[:, 2] > 3)
    full = LogRegHead(30, 3, C=1.0, tol=1e-8)
    full.fit(X, y)
    sub, ysub = X[:240] * 1.2, y[:240]                     # another scale and mean than ``full``'s
    cold, warm = LogRegHead(30, 3, C=1.0, tol=1e-8), LogRegHead(30, 3, C=1.0, tol=1e-8)
    hc, hw = cold.fit(sub, ysub), warm.fit(sub, ysub, start=full)
    assert hc["converged"] == hw["converged"] == [1.0]
    assert np.allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-6)
    first = LogRegHead(30, 3, C=1.0, max_iter=0)           # no iteration: the start itself
    first.fit(X, y, start=full)
    assert np.allclose(first.predict_proba(X), full.predict_proba(X), atol=1e-6)
