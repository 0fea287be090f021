"""Preprocessing v2 + flip averaging + the logreg head through the training code (issue 11.2)."""
from __future__ import annotations

import numpy as np
import pytest
from synth import make_busi_tree

from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.features.cache import CacheError, FeatureCache, extract
from busi_lite.features.preprocess import V1, V2
from busi_lite.model.config import Config, grid_for_heads, pick_configs
from busi_lite.model.model import Model
from busi_lite.training import core as T
from busi_lite.training import experiments as E
from busi_lite.training.core import build_xy, split_for, training_rows

FAST = dict(epochs=10, lr=1e-3, batch=8)
VIEWS = ("roi", "masked", "mask", "flip")


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("busi")
    make_busi_tree(root, n_per_class=(10, 16, 14), seed=5)
    out = {}
    for pp in ("v1", "v2"):
        path = tmp_path_factory.mktemp("cache") / f"c_{pp}.h5"
        extract(root, path, tiny_backbone, views=VIEWS, preprocess=pp, progress=False, log=lambda m: None)
        out[pp] = path
    return root, out


def test_caches_record_their_preprocessing(caches, tiny_backbone):
    root, paths = caches
    with FeatureCache(paths["v1"]) as a, FeatureCache(paths["v2"]) as b:
        assert a.preprocess_version == V1 and b.preprocess_version == V2
        assert a.paths == b.paths
        assert not np.allclose(a.pooled("raw"), b.pooled("raw"))
    with pytest.raises(CacheError, match="preprocessing") as e:  # incremental extract into another preprocessing
        extract(root, paths["v1"], tiny_backbone, views=VIEWS, preprocess="v2", progress=False, log=lambda m: None)
    assert e.value.param == "force"


def test_config_preprocess_and_flip_validated():
    assert Config.build(preprocess=V2).preprocess == "v2"  # full names are stored short
    for bad, param in ((dict(preprocess="v3"), "preprocess"), (dict(preprocess=2), "preprocess"),
                       (dict(flip="yes"), "flip"), ({"C": 0.0, "head": "logreg"}, "C"),
                       (dict(C=0.1), "C")):  # C on a head without it: named too
        with pytest.raises(ConfigError) as e:
            Config.build(**bad)
        assert e.value.param == param
    c = Config.build(name="x", preprocess="v2", flip=True, head="logreg", C=0.1)
    assert Config.from_json(c.to_json()) == c
    # an old config (no preprocess/flip/C fields) reads as v1 without flip
    old = {k: v for k, v in Config().to_json().items() if k not in ("preprocess", "flip", "C")}
    assert Config.from_json(old).preprocess == "v1" and Config.from_json(old).flip is False


def test_grid_names_and_pick():
    grid = grid_for_heads("plain,logreg", "v1,v2", (False, True))
    names = {c.name for c in grid}
    assert {"model-7p", "model-7p+logreg", "model-7p+v2+flip", "model-7p+logreg+v2+flip"} <= names
    assert len(names) == len(grid) == 12 * 8
    picked = pick_configs(grid, "model-7p")
    assert len(picked) == 8 and all(c.name.startswith("model-7p+") or c.name == "model-7p" for c in picked)


def test_training_refuses_another_preprocessing(caches):
    _, paths = caches
    with FeatureCache(paths["v1"]) as fc:
        with pytest.raises(CacheError, match="extracted with preprocessing") as e:
            E.run_one(fc, Config.build(preprocess="v2", **FAST), 0)
        assert e.value.param == "preprocess"


def test_flip_views_only_from_training_rows(caches):
    _, paths = caches
    with FeatureCache(paths["v2"]) as fc:
        sp = split_for(fc, 0)
        cfg = Config.build(preprocess="v2", flip=True, masks=True, **FAST)
        rows = training_rows(fc, sp.train, cfg, 0)
        xy = build_xy(fc, rows, cfg, with_views=True)
        assert not set(xy["row"]) & set(sp.test)
        assert set(np.unique(xy["view"])) == {"raw", "flip", "roi", "masked", "mask"}
        assert (xy["view"] == "flip").sum() == len(rows)  # every training image once mirrored
        assert np.array_equal(xy["y"], fc.labels[xy["row"]])
        ev = build_xy(fc, sp.test, cfg, with_views=False)
        assert set(np.unique(ev["view"])) == {"raw"}


def test_flip_averages_raw_and_mirror_at_evaluation(caches):
    _, paths = caches
    with FeatureCache(paths["v2"]) as fc:
        sp = split_for(fc, 0)
        cfg = Config.build(preprocess="v2", flip=True, head="logreg")
        head, hist = T.train_head(fc, sp.train, cfg, 0)
        assert hist["n_train"] == 2 * len(sp.train)
        p = T.predict_rows(head, fc, sp.test, cfg)
        raw = head.predict_proba(fc.pooled("raw", sp.test))
        flip = head.predict_proba(fc.pooled("flip", sp.test))
        np.testing.assert_allclose(p.proba, (raw + flip) / 2, rtol=1e-6)
        assert not np.allclose(p.proba, raw)


def test_mtl_flip_lesion_map_is_mirrored_back(caches):
    _, paths = caches
    with FeatureCache(paths["v1"]) as fc:
        sp = split_for(fc, 0)
        cfg = Config.build(head="mtl", flip=True, **FAST)
        head, _ = T.train_head(fc, sp.train, cfg, 0)
        p = T.predict_rows(head, fc, sp.test, cfg)
        a = head.predict(fc.spatial("raw", sp.test)).lesion.reshape(-1, 7, 7)
        b = head.predict(fc.spatial("flip", sp.test)).lesion.reshape(-1, 7, 7)[:, :, ::-1]
        np.testing.assert_allclose(p.lesion, ((a + b) / 2).reshape(len(a), 49), rtol=1e-5)


def test_logreg_v2_flip_model_card_and_reload(caches, tmp_path):
    _, paths = caches
    with FeatureCache(paths["v2"]) as fc:
        cfg = Config.build(name="lr-v2-flip", preprocess="v2", flip=True, head="logreg")
        model, card = E.fit_model(fc, cfg, 0, folds=3)
        assert card.preprocess_version == V2 and card.config.flip and card.head["kind"] == "logreg"
        model.save(tmp_path / "m")
        back = Model.load(tmp_path / "m")
        assert back.card.preprocess_version == V2 and back.card.config.flip is True
        x = fc.pooled("raw", [0, 1])
        np.testing.assert_array_equal(back.head.predict_proba(x), model.head.predict_proba(x))


def test_select_across_preprocessings(caches):
    _, paths = caches
    with FeatureCache(paths["v1"]) as a, FeatureCache(paths["v2"]) as b:
        cands = [Config.build(name="lr", head="logreg"), Config.build(name="lr+v2+flip", head="logreg", preprocess="v2", flip=True)]
        res = E.select({"v1": a, "v2": b}, cands, seed=0, folds=3)
        assert {r.name for r in res.ranking} == {"lr", "lr+v2+flip"}
        with pytest.raises(BusiError, match="preprocessing v2"):
            E.select({"v1": a}, cands, seed=0, folds=3)


def test_complexity_prefers_no_flip_then_v1():
    k = lambda **kw: E.complexity(Config.build(head="logreg", **kw), 3)  # noqa: E731
    assert k() < k(preprocess="v2") < k(flip=True) < k(flip=True, preprocess="v2")
    assert E.complexity(Config.build(head="logreg", flip=True, preprocess="v2"), 3) < E.complexity(Config(), 3)


def test_evaluate_of_a_flip_model_averages_like_its_card(caches):
    """`busi-lite evaluate` (flag_eval) must score a flip model as training did: mean of the raw and
    mirrored passes. It once used the raw pass only and disagreed with the card's test metrics."""
    from busi_lite.evaluation.flag_eval import evaluate_flags

    _, paths = caches
    with FeatureCache(paths["v1"]) as fc:
        model, card = E.fit_model(fc, Config.build(name="lr-flip", flip=True, head="logreg"), 0, folds=3)
        seen = []
        real = model.predict_features
        model.predict_features = lambda feats, mirrored=None: seen.append(mirrored) or real(feats, mirrored)
        ev = evaluate_flags(model, fc)
        rows = fc.split(0).test
        assert len(seen) == 1 and seen[0] is not None
        np.testing.assert_array_equal(seen[0], fc.spatial("flip", rows))
        op = card.metrics.test_operating_point.malignant
        assert (ev.operating_point["recall"], ev.operating_point["far"]) == (op["recall"], op["far"])
