"""One conformance suite over every registered head (scikit-learn's parametrize_with_checks).

Each check runs on each head class in ``busi_lite.heads.HEADS`` at collection time, so a head
registered anywhere before collection (a new module under busi_lite/heads/, or a test's own head
such as ``tests/toy_head.py``'s) is checked without naming it here. ``run_checks(cls)`` runs
them all on one class (for a head registered inside a test).

Checks: fit/predict shapes, save/load round trip, seeded reproducibility, a finite-difference
gradient check where the head has a backward pass (``loss_and_grads``), refusal of NaN input.
"""
from __future__ import annotations

import numpy as np
import pytest
import toy_head  # noqa: F401  (registers the toy head: the suite must pick it up by itself)

from busi_lite.heads.registry import HEADS, make_head

D = 6   # feature width of the backbone stand-in
N = 24  # samples


def _sizes(cls) -> tuple[int, int]:
    """(n_classes, samples) for ``cls``: its fixed classes (the box head: 2) or 3."""
    classes = getattr(cls, "classes", None)
    return (len(classes) if classes else 3), N


def _data(cls, seed=0):
    """X shaped as ``cls`` declares (input_shape), y with every class, fit keywords for its targets."""
    rng = np.random.default_rng(seed)
    n_classes, n = _sizes(cls)
    y = np.arange(n) % n_classes
    X = rng.standard_normal((n, *cls.input_shape(D))).astype(np.float32)
    X[..., 0] += 2.0 * y.reshape((n,) + (1,) * (X.ndim - 2))  # learnable: class shifts one feature
    targets = {name: rng.uniform(0, 1, (n, *shape)).astype(np.float32)
               for name, shape in cls.target_shapes().items()}
    return X, y, targets


def _fit(cls, seed=0):
    n_classes, _ = _sizes(cls)
    head = cls.build(cls.Params(), D, n_classes, seed)
    X, y, targets = _data(cls)
    fit_kw = {**cls.Params().fit_kwargs(), **({"epochs": 3, "batch_size": 8} if "epochs" in
                                                cls.Params().fit_kwargs() else {})}
    hist = head.fit(X, y, seed=seed, **fit_kw, **targets)
    return head, hist, X, y


def check_fit_predict_shapes(cls):
    head, hist, X, _ = _fit(cls)
    n_classes, n = _sizes(cls)
    out = head.predict(X)
    assert out.proba.shape == (n, n_classes) and np.allclose(out.proba.sum(1), 1)
    assert np.all((out.proba >= 0) & (out.proba <= 1))
    assert (out.lesion is not None) == bool(cls.has_lesion_map)
    if out.lesion is not None:
        assert out.lesion.shape[0] == n and np.all((out.lesion >= 0) & (out.lesion <= 1))
    assert np.array_equal(head.predict_proba(X), out.proba)
    assert isinstance(hist, dict) and hist["train_loss"], "fit returns a history with train_loss"
    assert head.config()["kind"] == cls.kind and head.config()["n_classes"] == n_classes


def check_save_load_round_trip(cls):
    head, _, X, _ = _fit(cls)
    params = {k: np.array(v) for k, v in head.params.items()}
    assert {k: tuple(v.shape) for k, v in params.items()} == {k: tuple(s) for k, s in
                                                              cls.param_shapes(head.config()).items()}
    again = make_head(head.config(), params)
    assert type(again) is cls
    assert np.array_equal(again.predict(X).proba, head.predict(X).proba)
    with pytest.raises(ValueError, match="shape|names"):
        make_head(head.config(), {k: v[..., :1] if v.ndim else v for k, v in params.items()} | {"extra": np.ones(1)})


def check_seeded_reproducibility(cls):
    a, ha, _, _ = _fit(cls, seed=3)
    b, hb, _, _ = _fit(cls, seed=3)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert ha["train_loss"] == hb["train_loss"]


def check_gradients(cls):
    """Central differences of loss_and_grads' loss against its gradients, in float64."""
    if not hasattr(cls, "loss_and_grads"):
        pytest.skip(f"{cls.__name__} has no backward pass")
    n_classes, _ = _sizes(cls)
    head = cls.build(cls.Params(), D, n_classes, seed=1)
    head.dtype = np.dtype(np.float64)
    rng = np.random.default_rng(2)
    head.params = {k: (v + 0.1 * rng.standard_normal(v.shape) * (k not in cls.frozen_params)).astype(np.float64)
                   for k, v in head.params.items()}
    X, y, targets = _data(cls, seed=4)
    X = X.astype(np.float64)
    w = rng.uniform(0.5, 2, len(y))
    _, grads = head.loss_and_grads(X, y, sample_weight=w, **targets)
    checked = 0
    for k, p in head.params.items():
        if k in cls.frozen_params:
            continue
        assert grads[k].shape == p.shape, k
        for i in list(np.ndindex(p.shape))[:: max(1, p.size // 8)]:  # about 8 entries of each
            old = p[i]
            p[i] = old + 1e-6
            fp = head.loss_and_grads(X, y, sample_weight=w, **targets)[0]
            p[i] = old - 1e-6
            fm = head.loss_and_grads(X, y, sample_weight=w, **targets)[0]
            p[i] = old
            num = (fp - fm) / 2e-6
            assert abs(num - grads[k][i]) <= 1e-5 * max(1.0, abs(num)), (k, i, num, grads[k][i])
            checked += 1
    assert checked > 0


def check_refuses_nan(cls):
    head, _, X, y = _fit(cls)
    bad = X.copy()
    bad[1].flat[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        head.predict(bad)
    n_classes, _ = _sizes(cls)
    fresh = cls.build(cls.Params(), D, n_classes, seed=0)
    _, _, targets = _data(cls)
    with pytest.raises(ValueError, match="NaN"):
        fresh.fit(bad, y, seed=0, **{**cls.Params().fit_kwargs(), **targets})


CHECKS = (check_fit_predict_shapes, check_save_load_round_trip, check_seeded_reproducibility, check_gradients,
          check_refuses_nan)


def run_checks(cls) -> None:
    """Every check on one head class (a head registered inside a test)."""
    for check in CHECKS:
        if check is check_gradients and not hasattr(cls, "loss_and_grads"):
            continue
        check(cls)


@pytest.mark.parametrize("kind", sorted(HEADS))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[6:])
def test_head_conforms(kind, check):
    check(HEADS[kind])


def test_every_head_is_checked_including_one_registered_by_a_test():
    assert {"plain", "mtl", "logreg", "box", "toy_linear"} <= set(HEADS)
