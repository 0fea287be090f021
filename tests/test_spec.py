"""Backbones by name: BackboneSpec, its registry, and the spec stored in caches and model cards."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from synth import make_busi_tree, make_tiny_onnx

from busi_lite.common.errors import ConfigError, ModelError
from busi_lite.common.resources import packaged_dir
from busi_lite.features import spec as S
from busi_lite.features.backbone import Backbone, BackboneError, file_sha256
from busi_lite.features.cache import CacheError, FeatureCache, extract
from busi_lite.features.preprocess import SHORT, Preprocessing
from busi_lite.model.config import Config
from busi_lite.model.model import Model
from busi_lite.serving.inference import Predictor
from busi_lite.training.experiments import fit_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: registrations made by a test end with it."""
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    return S


def test_default_is_the_shipped_backbone():
    d = S.get_spec("mobilenet_v2_035_224")
    assert d is S.DEFAULT and S.registered()[0] is d
    assert (d.input_size, d.grid, d.n_features, d.layout, d.input_range) == (224, 7, 1280, "NHWC", (-1.0, 1.0))
    assert d.feature_shape == [7, 7, 1280] and d.cells == 49 and d.cell_px == 32
    assert file_sha256(REPO / "weights" / d.file) == d.sha256  # the pinned SHA is the committed file's
    assert S.spec_for_sha(d.sha256) is d and S.spec_for_sha("0" * 64) is d  # unregistered: held to DEFAULT


def test_every_registered_preprocessing_exists():
    for spec in S.registered():
        for name in spec.preprocessings:
            assert Preprocessing(name).name == name
    assert set(S.DEFAULT.preprocessings) == set(SHORT.values())


@pytest.mark.parametrize("change, words", [
    (dict(sha256="abc"), "sha256"), (dict(grid=0), "grid"), (dict(input_size=225), "multiple of grid"),
    (dict(layout="NCHW"), "NHWC"), (dict(input_range=(0, 1)), "input_range"), (dict(preprocessings=()), "preprocessings"),
    (dict(n_features=True), "n_features"), (dict(input_name=""), "input_name")])
def test_bad_specs_are_refused(change, words):
    with pytest.raises(ConfigError, match=words):
        dataclasses.replace(S.DEFAULT, **change)


def test_json_round_trip_and_stored_checks(registry):
    d = S.DEFAULT.to_json()
    assert json.loads(json.dumps(d)) == d and S.BackboneSpec.from_json(d) == S.DEFAULT
    assert S.check_stored(None) is S.DEFAULT and S.check_stored(d) is S.DEFAULT
    assert S.check_stored({**d, "how_to_get": "elsewhere"}) is S.DEFAULT  # not part of the contract
    with pytest.raises(ConfigError, match="differs in grid"):
        S.check_stored({**d, "grid": 8, "input_size": 224})
    with pytest.raises(ConfigError, match="unknown backbone 'other'"):
        S.check_stored({**d, "name": "other"})
    with pytest.raises(ConfigError, match="unknown field"):
        S.BackboneSpec.from_json({**d, "mean": [0.5]})
    with pytest.raises(ConfigError, match="incomplete"):
        S.BackboneSpec.from_json({k: v for k, v in d.items() if k != "grid"})
    with pytest.raises(ConfigError, match="clashes"):
        S.register(dataclasses.replace(S.DEFAULT, grid=8))


def test_backbone_is_held_to_its_spec(tiny_backbone):
    bb = Backbone(tiny_backbone, threads=1)
    assert bb.spec is S.DEFAULT and not bb.registered  # the tiny file is not the pinned one
    other = dataclasses.replace(S.DEFAULT, name="wide", n_features=64)
    with pytest.raises(BackboneError, match=r"backbone 'wide'.*\[N,7,7,64\]"):
        Backbone(tiny_backbone, threads=1, spec=other)


def test_model_card_without_spec_loads_as_the_shipped_backbone(tmp_path):
    """Cards written before specs were stored (model_card/1) mean the shipped backbone."""
    src = packaged_dir() / "busi_lite_default"
    card = json.loads(src.with_suffix(".json").read_text())
    card.pop("backbone", None)
    (tmp_path / "m.npz").write_bytes(src.with_suffix(".npz").read_bytes())
    (tmp_path / "m.json").write_text(json.dumps(card))
    m = Model.load(tmp_path / "m")
    assert m.spec is S.DEFAULT and m.card.backbone is None and m.preprocessing.size == 224


def test_card_with_another_contract_is_refused(tmp_path, registry):
    src = packaged_dir() / "busi_lite_default"
    card = json.loads(src.with_suffix(".json").read_text())
    (tmp_path / "m.npz").write_bytes(src.with_suffix(".npz").read_bytes())
    v2only = S.register(dataclasses.replace(S.DEFAULT, name="v2only", sha256="1" * 64,
                                            preprocessings=(S.PREPROCESS_V2,)))
    for bad, words in (({**S.DEFAULT.to_json(), "n_features": 640}, "differs in n_features"),
                       ({**S.DEFAULT.to_json(), "name": "resnet"}, "unknown backbone 'resnet'"),
                       ({**S.DEFAULT.to_json(), "preprocessings": [S.PREPROCESS_V2]}, "differs in preprocessings"),
                       (v2only.to_json(), "preprocessing 'tm-centercrop-bilinear-aa-v1' is not one backbone")):
        (tmp_path / "m.json").write_text(json.dumps({**card, "backbone": bad}))
        with pytest.raises(ModelError, match=words):
            Model.load(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({**card, "backbone": S.DEFAULT.to_json()}))
    assert Model.load(tmp_path / "m").card.backbone == S.DEFAULT  # the spec written out is read back


def test_another_backbone_is_one_registration(registry, tmp_path):
    """A 160 px backbone with a 5x5 grid of 48 features: registered once, then extract, train,
    save, load and predict follow its spec; without the registration its model is refused."""
    onnx = make_tiny_onnx(tmp_path / "tiny160.onnx", input_size=160, out_channels=48)
    spec = S.register(S.BackboneSpec(name="tiny_160", file=onnx.name, sha256=file_sha256(onnx), input_size=160,
                                     grid=5, n_features=48, preprocessings=(S.PREPROCESS_V1,)))
    root = tmp_path / "busi"
    make_busi_tree(root, seed=0, n_per_class=(6, 8, 6))
    cache = tmp_path / "c.h5"
    extract(root, cache, onnx, views=("flip",), log=lambda m: None, progress=False)
    with pytest.raises(ConfigError, match="does not accept"):
        extract(root, tmp_path / "v2.h5", onnx, views=(), log=lambda m: None, progress=False, preprocess="v2")
    fc = FeatureCache(cache)
    assert fc.spec == spec and fc.spatial("raw").shape[1:] == (25, 48) and fc.mask224().shape[1:] == (160, 160)
    model, card = fit_model(fc, Config.build(name="tiny160-mtl", epochs=3, head="mtl", hidden=8, batch=8, flip=True),
                            seed=0, folds=2)
    assert card.backbone == spec and card.feature_shape == [5, 5, 48]
    model.save(tmp_path / "m")
    pred = Predictor(tmp_path / "m", onnx).predict([root / fc.paths[0]])[0]
    assert pred.ok and np.asarray(pred.lesion).shape == (5, 5)
    with pytest.raises(BackboneError, match="tiny_160"):  # the default backbone does not fit this model
        Predictor(tmp_path / "m", packaged_dir() / S.DEFAULT.file)
    del S._REGISTRY["tiny_160"]
    with pytest.raises(ModelError, match="unknown backbone 'tiny_160'"):
        Model.load(tmp_path / "m")
    with pytest.raises(CacheError, match="unknown backbone 'tiny_160'"):
        FeatureCache(cache)


def test_a_real_alike_backbone_registers(registry, tmp_path):
    """Optional: $BUSI_LITE_BACKBONE_ALT names another real MobileNetV2 export (e.g. alpha 0.5);
    it fits the default geometry once registered under its own name and SHA-256."""
    alt = os.environ.get("BUSI_LITE_BACKBONE_ALT", "").strip()
    if not alt:
        pytest.skip("BUSI_LITE_BACKBONE_ALT is not set")
    path = Path(alt)
    spec = S.register(dataclasses.replace(S.DEFAULT, name=path.stem, file=path.name, sha256=file_sha256(path)))
    bb = Backbone(path, threads=1)
    assert bb.spec is spec and bb.registered
    x = np.zeros((1, spec.input_size, spec.input_size, 3), np.float32)
    assert bb.features(x).shape == (1, *spec.feature_shape)


def test_cache_spec_stored_and_checked(tiny_world, tmp_path):
    import h5py

    with FeatureCache(tiny_world["cache"]) as fc:
        assert fc.spec is S.DEFAULT and fc.attrs["backbone"] == S.DEFAULT.name
        assert json.loads(fc.attrs["backbone_spec"]) == S.DEFAULT.to_json()
    old = tmp_path / "old.h5"
    old.write_bytes(tiny_world["cache"].read_bytes())
    with h5py.File(old, "a") as f:  # a cache that names no spec: the shipped backbone
        del f.attrs["backbone_spec"]
    with FeatureCache(old) as fc:
        assert fc.spec is S.DEFAULT
    with h5py.File(old, "a") as f:
        f.attrs["backbone_spec"] = json.dumps({**S.DEFAULT.to_json(), "grid": 8})
    with pytest.raises(CacheError, match="differs in grid"):
        FeatureCache(old)
