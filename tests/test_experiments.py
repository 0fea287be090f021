"""Training runs, leakage guards, calibration, model files, sweeps and the train/sweep/select CLI."""

import json
import math
from dataclasses import dataclass

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from test_head_conformance import run_checks

from busi_lite.cli import main
from busi_lite.common.errors import ConfigError, ModelError
from busi_lite.common.params import Interval, param
from busi_lite.features.cache import FeatureCache
from busi_lite.heads import HEADS, PlainHead, register_head
from busi_lite.heads.plain import PlainParams
from busi_lite.model.card import ModelCard
from busi_lite.model.config import Config, default_name, grid_for_heads, pick_configs
from busi_lite.model.model import OOD, Model
from busi_lite.model.records import RecordError, RunResult, SweepResult
from busi_lite.training import experiments as E
from busi_lite.training.core import build_xy, calibrate, recall_at_far, split_for, training_rows

FAST = dict(epochs=15, lr=1e-3, batch=8)


@pytest.fixture(scope="module")
def cache_path(masks_cache):
    return masks_cache  # conftest.py: raw + mask views, shared read-only (configs here use masks, not flip/box)


@pytest.fixture()
def cache(cache_path):
    return FeatureCache(cache_path)


def test_views_only_from_training_rows(cache):
    sp = split_for(cache, 0)
    cfg = Config.build(masks=True, **FAST)
    rows = training_rows(cache, sp.train, cfg, 0)
    xy = build_xy(cache, rows, cfg, with_views=True)
    assert set(xy["row"]) <= set(sp.train)
    assert not set(xy["row"]) & set(sp.test)
    assert len(xy["y"]) > len(rows)  # views were added
    assert set(np.unique(xy["view"])) == {"raw", "roi", "masked", "mask"}
    # every view sample has the label of its source image
    assert np.array_equal(xy["y"], cache.labels[xy["row"]])


def test_undersample_and_fraction(cache):
    sp = split_for(cache, 0)
    cfg = Config.build(balance="undersample", per_class=5)
    rows = training_rows(cache, sp.train, cfg, 0)
    assert np.bincount(cache.labels[rows]).max() <= 5
    half = training_rows(cache, sp.train, Config(), 0, fraction=0.5)
    full_counts = np.bincount(cache.labels[sp.train], minlength=3)
    assert np.all(np.abs(np.bincount(cache.labels[half], minlength=3) - full_counts / 2) <= 1)
    assert set(half) <= set(sp.train)
    assert np.array_equal(half, training_rows(cache, sp.train, Config(), 0, fraction=0.5))


def test_class_weights_mean_one(cache):
    sp = split_for(cache, 0)
    xy = build_xy(cache, sp.train, Config.build(balance="weights"), with_views=False)
    w = xy["sample_weight"]
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    per_class = [w[xy["y"] == c].sum() for c in range(3)]
    assert np.allclose(per_class, per_class[0], rtol=1e-4)


def test_run_one_learns_and_is_deterministic(cache):
    cfg = Config.build(**FAST)
    a, b = E.run_one(cache, cfg, 1), E.run_one(cache, cfg, 1)
    assert isinstance(a, RunResult)
    assert a.test.accuracy == b.test.accuracy
    assert a.history["train_loss"] == b.history["train_loss"]
    assert a.test.accuracy > 0.5  # synthetic classes are separable; chance is ~0.4
    assert len(a.history["val_acc"]) == cfg.params.epochs
    assert a.test.segmentation is None and "segmentation" not in a.to_json()["test"]


def test_mtl_run_reports_segmentation(cache):
    r = E.run_one(cache, Config.build(head="mtl", **FAST), 0)
    seg = r.test.segmentation
    assert seg["n"] > 0 and 0 <= seg["dice"] <= 1
    assert len(r.history["train_seg_loss"]) == FAST["epochs"]


def _corrupt_test_rows(path, tmp_path, seed):
    """Copy of the cache whose TEST images (split ``seed``) have scrambled features and masks."""
    import shutil

    dst = tmp_path / "corrupt.h5"
    shutil.copy(path, dst)
    c = FeatureCache(path)  # the split depends only on the index, which the copy shares
    test = np.sort(split_for(c, seed).test)
    rng = np.random.default_rng(0)
    with h5py.File(dst, "r+") as f:
        for v in c.views:
            for name in (f"features/{v}", f"pooled/{v}", f"grid/{v}"):
                ds = f[name]
                ds[test] = rng.random((len(test),) + ds.shape[1:]).astype(ds.dtype) * 3
    return dst


def test_calibration_never_sees_test_images(cache_path, tmp_path):
    """Thresholds, OOD statistics and weights are unchanged when test images change."""
    cfg = Config.build(head="mtl", masks=True, epochs=4, lr=1e-3, batch=8)  # the property does not need more epochs
    m1, meta1 = E.fit_model(FeatureCache(cache_path), cfg, seed=0, folds=2)
    m2, meta2 = E.fit_model(FeatureCache(_corrupt_test_rows(cache_path, tmp_path, 0)), cfg, seed=0, folds=2)
    assert meta1.calibration == meta2.calibration
    for k in m1.head.params:
        assert np.array_equal(m1.head.params[k], m2.head.params[k])
    assert np.array_equal(m1.ood.components, m2.ood.components)
    # ...while the test metrics do change (the corruption reached the test rows)
    assert meta1.test_predictions.proba.tolist() != meta2.test_predictions.proba.tolist()


@pytest.fixture(scope="module")
def fitted(cache_path):
    """One calibrated multi-task model, shared by the persistence tests."""
    return E.fit_model(FeatureCache(cache_path), Config.build(head="mtl", **FAST), seed=0, folds=2)


def test_model_roundtrip_and_refusals(fitted, cache, tmp_path):
    model, meta = fitted
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


def test_model_save_is_atomic(fitted, tmp_path, monkeypatch):
    model, _ = fitted
    npz, js = model.save(tmp_path / "m")
    before = (npz.read_bytes(), js.read_text())

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("busi_lite.model.model.json.dumps", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m")
    assert (npz.read_bytes(), js.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m.json", "m.npz"]  # the write lock stays


def test_ood_score_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 50)) * np.linspace(3, 0.1, 50)
    ood = OOD.fit(X, k=10)
    inside = ood.score(rng.normal(size=(200, 50)) * np.linspace(3, 0.1, 50))
    far = ood.score(rng.normal(size=(200, 50)) * 3 + 5)
    assert 0.5 < np.median(inside) < 2
    assert far.min() > 3 * np.quantile(inside, 0.99)


def test_ood_fit_equals_the_svd_definition():
    """OOD.fit's principal axes (from the smaller Gram matrix) are the SVD's: the same scores, both
    when images are fewer than features and when they are more."""
    rng = np.random.default_rng(1)
    for n in (30, 120):
        X = rng.normal(size=(n, 60)) * np.linspace(3, 0.1, 60) + 1
        ood = OOD.fit(X, k=8)
        Xc = X - X.mean(0)
        _, s, vt = np.linalg.svd(Xc, full_matrices=False)
        var = s ** 2 / (n - 1)
        ref = OOD(X.mean(0).astype(np.float32), vt[:8].astype(np.float32), np.sqrt(var[:8]).astype(np.float32) + 1e-6,
                  float(var[8:].sum() / (60 - 8)))
        assert np.allclose(ood.scales, ref.scales, rtol=1e-6) and np.isclose(ood.resid_var, ref.resid_var, rtol=1e-9)
        Y = rng.normal(size=(50, 60)) * 2
        assert np.allclose(ood.score(Y), ref.score(Y), rtol=1e-5)
    flat = np.repeat(rng.normal(size=(3, 60)), 10, axis=0)     # rank 2 < k: the SVD's orthonormal axes
    ood = OOD.fit(flat, k=8)
    assert np.isfinite(ood.components).all() and np.allclose(ood.components @ ood.components.T, np.eye(8), atol=1e-5)


def test_calibrate_thresholds():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    logits = rng.normal(size=(150, 3)) + 2.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cal = calibrate({"y": y, "proba": proba, "ood": rng.random(150), "lesion": None}, target_recall=0.9)
    p_mal = proba[:, 2]
    assert (p_mal[y == 2] >= cal.malignant_threshold).mean() >= 0.9
    wrong = proba.argmax(1) != y
    assert (proba.max(1)[wrong] < cal.low_confidence).mean() <= 0.5 + 1e-9
    assert cal.lesion_threshold is None and "lesion_threshold" not in cal.to_json()


def test_aggregate_and_paper_columns(cache):
    res = E.sweep(cache, [Config.build(name="model-7", base="model-7", **FAST)], seeds=[0, 1])
    row = res.summary[0]
    assert row.seeds == [0, 1]
    r = row.metrics["malignant_recall"]
    vals = [x.test.malignant["recall"] for x in res.results]
    assert r.mean == pytest.approx(np.mean(vals))
    assert row.paper["malignant_recall"] == pytest.approx(0.844)
    # the JSON layout reports and older tools read
    js = json.loads(json.dumps(res.to_json()))
    assert js["summary"][0]["malignant_recall"]["mean"] == r.mean and js["summary"][0]["config"]["views"] == \
        ["roi", "masked", "mask"]
    assert js["results"][0]["test"]["malignant"]["recall"] == vals[0]


def test_recall_at_far():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.8, 0.95])
    assert recall_at_far(y, s, 0.0) == 0.25   # only 0.95 beats the 0.9 negative
    assert recall_at_far(y, s, 0.25) == 1.0


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
    assert res.exit_code == 2 and "feature cache not found" in res.output and "Traceback" not in res.output


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


# --------------------------------------------------------------------------- #
# Config: one source of defaults, every hyper-parameter validated, named
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("param,value", [
    ("lr", -1.0), ("lr", 0.0), ("lr", float("nan")), ("lr", float("inf")), ("lr", "1e-4"),
    ("batch", 0), ("batch", 2.5), ("batch", True), ("epochs", 0), ("epochs", -3), ("per_class", 0),
    ("hidden", 0), ("lam", -0.5), ("lam", float("nan")), ("views", ("roi", "bogus")), ("views", "roi"),
    ("balance", "oversample"), ("head", "resnet"), ("masks", "yes"), ("name", ""),
])
def test_config_validation_names_the_parameter(param, value):
    with pytest.raises(ConfigError) as e:
        Config.build(**{param: value})
    assert e.value.param == param and param in str(e.value) and " -> " in str(e.value)


def test_config_defaults_are_the_fit_defaults():
    c = Config()
    p = c.params
    assert (p.lr, p.batch, p.epochs, c.per_class, p.hidden, c.head) == (1e-4, 32, 50, 150, 100, "plain")
    assert Config.build(views=["roi"]).views == ("roi",)  # lists from JSON become tuples
    assert Config.from_json(c.to_json()) == c
    with pytest.raises(ConfigError, match="unknown fields"):
        Config.from_json({**c.to_json(), "dropout": 0.5})


def test_parse_balance():
    P = Config.parse_balance
    assert P("none") == ("none", 150) and P("weights") == ("weights", 150)
    assert P("undersample") == ("undersample", 150) and P("undersample=120") == ("undersample", 120)
    for bad in ("undersample=abc", "undersample=-5", "undersample=0", "undersample=", "weights=3", "over"):
        with pytest.raises(ConfigError) as e:
            P(bad)
        assert e.value.param == "balance" and repr(bad) in str(e.value) and "undersample=" in e.value.fix


def test_pick_configs_shared_by_sweep_and_select():
    grid = grid_for_heads("plain,mtl")
    assert [c.name for c in pick_configs(grid, "model-7")] == ["model-7", "model-7+mtl"]
    assert [c.name for c in pick_configs(grid, "model-7+mtl, model-1")] == ["model-1", "model-1+mtl", "model-7+mtl"]
    assert len(pick_configs(grid, "")) == 24 and len(pick_configs(grid, [])) == 24
    with pytest.raises(ConfigError, match="model-77") as e:
        pick_configs(grid, "model-7,model-77")
    assert e.value.param == "only" and "model-7p+mtl" in str(e.value)
    with pytest.raises(ConfigError) as e:
        pick_configs([], "")
    with pytest.raises(ConfigError, match="head"):
        grid_for_heads("plain,cnn")


# --------------------------------------------------------------------------- #
# head registry: a new head is one class + one registration
# --------------------------------------------------------------------------- #
def test_registered_toy_head_trains_saves_and_loads(cache, tmp_path):
    calls = []

    @dataclass(frozen=True)
    class ToyParams(PlainParams):
        gain: float = param(2.0, Interval(float, 0, None, open="low"), "Input gain of the toy head.", token="g{:g}")

    @register_head
    class ToyHead(PlainHead):
        """Plain head on pooled features scaled by ``gain`` (a different 'preprocessing'), with its own
        declared parameter."""
        kind = "toy"
        Params = ToyParams

        def __init__(self, n_features=1280, n_hidden=100, n_classes=3, gain=2.0, seed=0, dtype=np.float32):
            super().__init__(n_features, n_hidden, n_classes, seed, dtype)
            self.gain = float(gain)

        @classmethod
        def build(cls, params, n_features, n_classes, seed):
            return cls(n_features, params.hidden, n_classes, gain=params.gain, seed=seed)

        def config(self):
            return {**super().config(), "gain": self.gain}

        def logits(self, X, chunk=256):  # prediction
            return super().logits(np.asarray(X) * self.gain, chunk)

        def _loss_grads(self, X, y, w, t=None, sw=None):  # training (the conformance suite checks both agree)
            calls.append(len(X))
            return super()._loss_grads(X * self.gain, y, w, t, sw)

    try:
        run_checks(ToyHead)  # the conformance suite on a head registered here
        cfg = Config.build(head="toy", masks=True, gain=3.0, **FAST)
        assert Config.from_json(cfg.to_json()) == cfg and cfg.params.gain == 3.0
        with pytest.raises(ConfigError) as e:
            Config.build(head="toy", gain=-1.0)
        assert e.value.param == "gain"
        assert default_name(cfg, 0).startswith("toy-lr") and "-g3-" in default_name(cfg, 0)
        calls.clear()
        r = E.run_one(cache, cfg, 0)
        assert r.config.head == "toy" and r.test.n > 0 and calls  # trained and predicted through the toy head
        assert r.n_train_samples > r.n_train_images  # its declared input was read for the mask views too
        model, card = E.fit_model(cache, cfg, seed=0, folds=2)
        model.save(tmp_path / "toy")
        loaded = Model.load(tmp_path / "toy")
        assert type(loaded.head) is ToyHead and loaded.card.head["kind"] == "toy"
        feats = cache.spatial("raw", np.arange(4)).astype(np.float32)
        assert np.array_equal(loaded.predict_features(feats)["proba"], model.predict_features(feats)["proba"])
        # the scaling reached prediction: a plain head with the same weights gives other numbers
        plain_cfg = {k: v for k, v in loaded.head.config().items() if k != "gain"}
        plain = PlainHead.from_params({**plain_cfg, "kind": "plain"}, loaded.head.params)
        assert not np.allclose(plain.predict_proba(feats.mean(1)), loaded.predict_features(feats)["proba"])
    finally:
        HEADS.pop("toy", None)
    with pytest.raises(ConfigError, match="toy"):
        Config.build(head="toy")


# --------------------------------------------------------------------------- #
# records: round trips, schema and type errors at load
# --------------------------------------------------------------------------- #
def test_run_and_sweep_records_round_trip(cache):
    res = E.sweep(cache, [Config.build(name="model-1", **FAST)], seeds=[0])
    js = json.loads(json.dumps(res.to_json()))
    assert js["schema"] == SweepResult.SCHEMA and js["results"][0]["schema"] == RunResult.SCHEMA
    back = SweepResult.from_json(js)
    assert json.loads(json.dumps(back.to_json())) == js
    assert back.results[0].config == res.results[0].config
    legacy = {k: v for k, v in js.items() if k != "schema"}  # files written before records: current version
    assert SweepResult.from_json(legacy).cache == res.cache
    with pytest.raises(RecordError, match="schema 'sweep/99'"):
        SweepResult.from_json({**js, "schema": "sweep/99"})
    bad = json.loads(json.dumps(js))
    bad["results"][0]["seed"] = "0"
    with pytest.raises(RecordError, match=r"results\[0\].*seed"):
        SweepResult.from_json(bad)
    bad = json.loads(json.dumps(js))
    bad["results"][0]["test"]["malignant"]["tp"] = 1.5
    with pytest.raises(RecordError, match=r"test.malignant.*tp"):
        SweepResult.from_json(bad)
    bad = json.loads(json.dumps(js))
    bad["results"][0]["config"]["lr"] = -1
    with pytest.raises(RecordError, match="lr"):
        SweepResult.from_json(bad)


def test_model_card_round_trip_and_strictness(fitted, tmp_path):
    model, card = fitted
    npz, js = model.save(tmp_path / "m")
    side = json.loads(js.read_text())
    assert side["schema"] == card.SCHEMA
    loaded = Model.load(tmp_path / "m")
    assert json.loads(json.dumps(loaded.card.to_json())) == side

    def refused(edit, match):
        d = json.loads(json.dumps(side))
        edit(d)
        js.write_text(json.dumps(d))
        with pytest.raises(ModelError, match=match):
            Model.load(tmp_path / "m")

    refused(lambda d: d.update(schema="model_card/3"), "schema")
    refused(lambda d: d.update(classes=["normal", "malignant"]), "n_classes 3 != 2")
    refused(lambda d: d["head"].update(n_hidden=1e12), "n_hidden")        # float: refused by type
    refused(lambda d: d["head"].update(n_hidden=10 ** 12), "over the 256 MB limit")   # int: refused by the size cap
    refused(lambda d: d["head"].update(n_hidden=5), "inflates to|has shape")   # refused by the npz directory or header
    refused(lambda d: d["calibration"].update(malignant_threshold=float("nan")), "malignant_threshold")
    refused(lambda d: d["calibration"].update(low_confidence=None), "low_confidence")
    refused(lambda d: d.update(calibration=None), "calibration")
    refused(lambda d: d.update(split=[1, 2]), "split")
    refused(lambda d: d["config"].update(head="plain"), "head")
    js.write_text("[1, 2]")
    with pytest.raises(ModelError, match="not an object"):
        Model.load(tmp_path / "m")
    js.write_text(json.dumps(side))
    assert Model.load(tmp_path / "m").card.to_json() == side


def test_model_load_reads_only_expected_members(fitted, tmp_path):
    import hashlib
    import zipfile

    model, _ = fitted
    npz, js = model.save(tmp_path / "m")

    def reseal():  # the sidecar records the weights' SHA-256: update it as a deliberate edit would
        side = json.loads(js.read_text())
        side["weights_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
        js.write_text(json.dumps(side))

    with zipfile.ZipFile(npz, "a") as z:  # a member that is not even a valid .npy: never parsed
        z.writestr("junk.npy", b"\x00" * 1000)
    with pytest.raises(ModelError, match="do not belong together"):  # not the bytes that were saved
        Model.load(tmp_path / "m")
    reseal()
    loaded = Model.load(tmp_path / "m")
    assert np.array_equal(loaded.head.params["W1"], model.head.params["W1"])
    with zipfile.ZipFile(npz) as z:
        names = [n for n in z.namelist() if n != "head.ws.npy"]
        members = {n: z.read(n) for n in names}
    with zipfile.ZipFile(npz, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    reseal()
    with pytest.raises(ModelError, match="'head.ws' is missing"):
        Model.load(tmp_path / "m")


def test_committed_default_model_loads_unchanged():
    from pathlib import Path

    stem = Path(__file__).resolve().parents[1] / "weights" / "busi_lite_default"
    if not stem.with_suffix(".json").is_file():
        pytest.skip("no committed default model")
    side = json.loads(stem.with_suffix(".json").read_text())
    m = Model.load(stem)
    out = json.loads(json.dumps(m.card.to_json()))
    # read from the layout it was written in (model_card/1: flat configs), written in today's; only the
    # schema and the configs' layout differ, and every config reads back the same
    assert side.get("schema", "model_card/1") in (m.card.SCHEMA, *m.card.READS) and out["schema"] == m.card.SCHEMA
    sel_side, sel_out = side.get("selection") or {"ranking": []}, out.get("selection") or {"ranking": []}
    configs = [("config", side["config"], out["config"])] + [
        ("ranking", a["config"], b["config"]) for a, b in zip(sel_side["ranking"], sel_out["ranking"])]
    for _, a, b in configs:
        assert Config.from_json(a) == Config.from_json(b)
    def strip(d):
        return {k: v for k, v in d.items() if k not in ("schema", "config", "selection")}
    assert strip(out) == strip(side)  # nothing else changed, nothing lost
    assert {k: v for k, v in sel_out.items() if k != "ranking"} == {k: v for k, v in sel_side.items() if k != "ranking"}
    if m.card.selection is not None:  # a model chosen by `select` names itself first; the two-site default has none
        assert m.card.selection.ranking[0].name == m.card.config.name
    again = ModelCard.from_json(out)  # today's layout reads back
    assert again.to_json() == m.card.to_json()


# --------------------------------------------------------------------------- #
# sweep resume: same cache, backbone AND split digest
# --------------------------------------------------------------------------- #
def test_resume_keeps_only_runs_of_this_cache_and_split(cache, tmp_path):
    res = E.sweep(cache, [Config.build(name="model-1", **FAST)], seeds=[0, 1])
    path = tmp_path / "sw.partial.json"
    E.save_partial(path, res.results, cache)
    kept = E.resume_runs(path, cache)
    assert [r.seed for r in kept] == [0, 1] and kept[0].to_json() == res.results[0].to_json()
    part = json.loads(path.read_text())
    part["results"][1]["split"] = "0" * 16  # a run made on another image set
    msgs = []
    kept = E.resume_runs(part, cache, log=msgs.append)
    assert [r.seed for r in kept] == [0] and "split" in msgs[0]
    assert E.resume_runs({**part, "backbone_sha256": "f" * 64}, cache) == []
    assert E.resume_runs({**part, "cache": "/elsewhere.h5"}, cache) == []
    assert E.resume_runs(tmp_path / "missing.json", cache) == []
    # kept runs are not rerun
    again = E.sweep(cache, [Config.build(name="model-1", **FAST)], seeds=[0, 1], done=kept)
    assert again.results[0] is kept[0] and again.results[1].to_json()["test"] == res.results[1].to_json()["test"]
    assert not math.isnan(again.summary[0].metrics["accuracy"].mean)
