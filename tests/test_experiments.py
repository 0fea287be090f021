"""Training runs, leakage guards, calibration, model files, sweeps and the train/sweep/select CLI."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from busi_lite import experiments as E
from busi_lite.cli import main
from busi_lite.features import FeatureCache, extract
from busi_lite.model import OOD, Model, ModelError
from synth import make_busi_tree

FAST = dict(epochs=15, lr=1e-3, batch=8)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("busi")
    make_busi_tree(root, n_per_class=(12, 20, 16), seed=3)
    out = tmp_path_factory.mktemp("cache") / "c.h5"
    extract(root, out, tiny_backbone, progress=False, log=lambda m: None)
    return out


@pytest.fixture()
def cache(cache_path):
    return FeatureCache(cache_path)


def test_views_only_from_training_rows(cache):
    sp = E.split_for(cache, 0)
    cfg = E.Config(masks=True, **FAST)
    rows = E.training_rows(cache, sp.train, cfg, 0)
    xy = E.build_xy(cache, rows, cfg, with_views=True)
    assert set(xy["row"]) <= set(sp.train)
    assert not set(xy["row"]) & set(sp.test)
    assert len(xy["y"]) > len(rows)  # views were added
    assert set(np.unique(xy["view"])) == {"raw", "roi", "masked", "mask"}
    # every view sample has the label of its source image
    assert np.array_equal(xy["y"], cache.labels[xy["row"]])


def test_undersample_and_fraction(cache):
    sp = E.split_for(cache, 0)
    cfg = E.Config(balance="undersample", per_class=5)
    rows = E.training_rows(cache, sp.train, cfg, 0)
    assert np.bincount(cache.labels[rows]).max() <= 5
    half = E.training_rows(cache, sp.train, E.Config(), 0, fraction=0.5)
    full_counts = np.bincount(cache.labels[sp.train], minlength=3)
    assert np.all(np.abs(np.bincount(cache.labels[half], minlength=3) - full_counts / 2) <= 1)
    assert set(half) <= set(sp.train)
    assert np.array_equal(half, E.training_rows(cache, sp.train, E.Config(), 0, fraction=0.5))


def test_class_weights_mean_one(cache):
    sp = E.split_for(cache, 0)
    xy = E.build_xy(cache, sp.train, E.Config(balance="weights"), with_views=False)
    w = xy["sample_weight"]
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    per_class = [w[xy["y"] == c].sum() for c in range(3)]
    assert np.allclose(per_class, per_class[0], rtol=1e-4)


def test_run_one_learns_and_is_deterministic(cache):
    cfg = E.Config(**FAST)
    a, b = E.run_one(cache, cfg, 1), E.run_one(cache, cfg, 1)
    assert a["test"]["accuracy"] == b["test"]["accuracy"]
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["test"]["accuracy"] > 0.5  # synthetic classes are separable; chance is ~0.4
    assert len(a["history"]["val_acc"]) == cfg.epochs


def test_mtl_run_reports_segmentation(cache):
    r = E.run_one(cache, E.Config(head="mtl", **FAST), 0)
    seg = r["test"]["segmentation"]
    assert seg["n"] > 0 and 0 <= seg["dice"] <= 1


def _corrupt_test_rows(path, tmp_path, seed):
    """Copy of the cache whose TEST images (split ``seed``) have scrambled features and masks."""
    import shutil

    dst = tmp_path / "corrupt.h5"
    shutil.copy(path, dst)
    c = FeatureCache(dst)
    test = np.sort(E.split_for(c, seed).test)
    rng = np.random.default_rng(0)
    with h5py.File(dst, "r+") as f:
        for v in c.views:
            for name in (f"features/{v}", f"pooled/{v}", f"grid/{v}"):
                ds = f[name]
                ds[test] = rng.random((len(test),) + ds.shape[1:]).astype(ds.dtype) * 3
    return dst


def test_calibration_never_sees_test_images(cache_path, tmp_path):
    """Thresholds, OOD statistics and weights are unchanged when test images change."""
    cfg = E.Config(head="mtl", masks=True, **FAST)
    m1, meta1 = E.fit_model(FeatureCache(cache_path), cfg, seed=0, folds=3)
    m2, meta2 = E.fit_model(FeatureCache(_corrupt_test_rows(cache_path, tmp_path, 0)), cfg, seed=0, folds=3)
    assert meta1["calibration"] == meta2["calibration"]
    for k in m1.head.params:
        assert np.array_equal(m1.head.params[k], m2.head.params[k])
    assert np.array_equal(m1.ood.components, m2.ood.components)
    # ...while the test metrics do change (the corruption reached the test rows)
    assert meta1["test_predictions"]["proba"].tolist() != meta2["test_predictions"]["proba"].tolist()


def test_model_roundtrip_and_refusals(cache, tmp_path):
    model, meta = E.fit_model(cache, E.Config(head="mtl", **FAST), seed=0, folds=3)
    npz, js = model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    feats = cache.spatial("raw", np.arange(5)).astype(np.float32)
    a, b = model.predict_features(feats), loaded.predict_features(feats)
    assert np.array_equal(a["proba"], b["proba"]) and np.array_equal(a["lesion"], b["lesion"])
    assert loaded.ood.threshold == model.ood.threshold
    side = json.loads(js.read_text())
    for key in ("config", "classes", "backbone_sha256", "feature_shape", "preprocess_version", "split",
                "metrics", "history", "calibration"):
        assert key in side
    assert side["backbone_sha256"] == cache.backbone_sha256
    with pytest.raises(ModelError, match="backbone"):
        loaded.check_backbone("0" * 64, "this cache")
    side["preprocess_version"] = "other"
    js.write_text(json.dumps(side))
    with pytest.raises(ModelError, match="preprocessing"):
        Model.load(tmp_path / "m")
    with pytest.raises(ModelError, match="not found"):
        Model.load(tmp_path / "missing")


def test_model_save_is_atomic(cache, tmp_path, monkeypatch):
    model, _ = E.fit_model(cache, E.Config(**FAST), seed=0, folds=2)
    npz, js = model.save(tmp_path / "m")
    before = (npz.read_bytes(), js.read_text())

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("busi_lite.model.json.dumps", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m")
    assert (npz.read_bytes(), js.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz"]


def test_ood_score_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 50)) * np.linspace(3, 0.1, 50)
    ood = OOD.fit(X, k=10)
    inside = ood.score(rng.normal(size=(200, 50)) * np.linspace(3, 0.1, 50))
    far = ood.score(rng.normal(size=(200, 50)) * 3 + 5)
    assert 0.5 < np.median(inside) < 2
    assert far.min() > 3 * np.quantile(inside, 0.99)


def test_calibrate_thresholds():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    logits = rng.normal(size=(150, 3)) + 2.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cal = E.calibrate({"y": y, "proba": proba, "ood": rng.random(150), "lesion": None}, target_recall=0.9)
    p_mal = proba[:, 2]
    assert (p_mal[y == 2] >= cal["malignant_threshold"]).mean() >= 0.9
    wrong = proba.argmax(1) != y
    assert (proba.max(1)[wrong] < cal["low_confidence"]).mean() <= 0.5 + 1e-9
    assert "lesion_threshold" not in cal


def test_aggregate_and_paper_columns(cache):
    res = E.sweep(cache, [E.Config(name="model-7", **FAST)], seeds=[0, 1])
    row = res["summary"][0]
    assert row["seeds"] == [0, 1]
    r = row["malignant_recall"]
    vals = [x["test"]["malignant"]["recall"] for x in res["results"]]
    assert r["mean"] == pytest.approx(np.mean(vals))
    assert row["paper"]["malignant_recall"] == pytest.approx(0.844)


def test_recall_at_far():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.8, 0.95])
    assert E.recall_at_far(y, s, 0.0) == 0.25   # only 0.95 beats the 0.9 negative
    assert E.recall_at_far(y, s, 0.25) == 1.0


def test_cli_train_sweep_select(cache_path, tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["train", "--cache", str(cache_path), "--epochs", "10", "--lr", "1e-3", "--batch", "8",
                          "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "malignant: recall" in res.output and (tmp_path / "m.npz").exists()
    res = r.invoke(main, ["sweep", "--cache", str(cache_path), "--seeds", "2", "--only", "model-1,model-5",
                          "--fractions", "1,0.5", "--out", str(tmp_path / "sw")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "sw.json").read_text())["summary"]
    assert {(s["name"], s["fraction"]) for s in summary} == {("model-1", 1.0), ("model-1", 0.5),
                                                             ("model-5", 1.0), ("model-5", 0.5)}
    assert (tmp_path / "sw.csv").read_text().count("\n") == 5
    res = r.invoke(main, ["select", "--cache", str(cache_path), "--heads", "plain", "--only", "model-1,model-5",
                          "--out", str(tmp_path / "best"), "--json"])
    assert res.exit_code == 0, res.output
    sel = json.loads(res.stdout)
    assert len(sel["ranking"]) == 2 and (tmp_path / "best.json").exists()
    # a missing cache is a clear error, not a traceback
    res = r.invoke(main, ["train", "--cache", str(tmp_path / "nope.h5")])
    assert res.exit_code == 2 and "busi-lite extract" in res.output


def test_sweep_resumes_from_partial(cache_path, tmp_path, monkeypatch):
    calls = []
    real = E.run_one

    def counting(*a, **k):
        calls.append(a[2])
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after one finished run
        return real(*a, **k)

    monkeypatch.setattr(E, "run_one", counting)
    args = ["sweep", "--cache", str(cache_path), "--seeds", "2", "--only", "model-1", "--out", str(tmp_path / "sw")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and (tmp_path / "sw.partial.json").exists()
    calls.clear()
    monkeypatch.setattr(E, "run_one", real)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "resuming: 1 runs kept" in r.output
    assert [x["seed"] for x in json.loads((tmp_path / "sw.json").read_text())["results"]] == [0, 1]
    assert not (tmp_path / "sw.partial.json").exists()
