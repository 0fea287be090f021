"""The batch site-shift check (model.shift, training.shift, serving.shift) and the box-first advice.

Synthetic: Gaussian 'sites' for the statistic; the tiny backbone world for the card, the CLI,
the API warning and shifted images (gain, blur, speckle, colour tint). Real data (when
present): BUSI's held-out split must not fire for the shipped-recipe BUSI-only statistics,
BUS-BRA-dev must."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from synth import make_busi_tree

from busi_lite.cli import main
from busi_lite.features.cache import FeatureCache, extract
from busi_lite.features.views import BOX_VIEWS
from busi_lite.model.card import ModelCard
from busi_lite.model.config import Config
from busi_lite.model.model import OOD, Model
from busi_lite.model.shift import ShiftInfo
from busi_lite.serving.advice import BOX, R_SHIFT, R_SITE, WHOLE
from busi_lite.serving.inference import Predictor, predict_images
from busi_lite.serving.shift import SHIFT_WARNING, SiteShiftWarning, check_coords, image_coords
from busi_lite.training.box import add_box_head
from busi_lite.training.experiments import fit_model
from busi_lite.training.shift import fit_shift

_DIRECTION = np.random.default_rng(99).normal(size=64) / 8  # a site's shift: not along the class means


def _site(rng, n, shift=0.0, d=64):
    """Gaussian 'pooled features' of a site with 3 classes (class means differ), mean moved by
    ``shift`` times a fixed random direction of norm 1. (A shift exactly along the class means'
    directions is invisible to the check by design: it cannot be told from another class mix.)"""
    y = rng.integers(0, 3, n)
    cls = np.array([[0.0] * d, [0.6] * (d // 2) + [0.0] * (d - d // 2), [0.0] * (d // 2) + [0.6] * (d - d // 2)])
    X = rng.normal(size=(n, d)) + cls[y] + shift * _DIRECTION
    return X, np.array(["normal", "benign", "malignant"])[y]


class _M:
    """Just enough of a Model for serving.shift: card.shift and ood."""
    def __init__(self, ood, info):
        self.ood, self.card = ood, type("C", (), {"shift": info})()


def test_statistic_separates_a_shifted_site_and_not_held_out_images():
    rng = np.random.default_rng(0)
    X, y = _site(rng, 600)
    ood = OOD.fit(X, k=16)
    info = fit_shift(ood, [("A", X, y, np.arange(len(X)))], seed=0)
    assert info is not None and info.sites[0].threshold > 0
    assert info.sites[0].false_alarm_rate <= 0.05
    m = _M(ood, info)
    fired_same = fired_other = 0
    for i in range(40):
        Xh, _ = _site(np.random.default_rng(100 + i), 30)          # new images, same site
        Xo, _ = _site(np.random.default_rng(200 + i), 30, shift=4.0)  # another site
        fired_same += check_coords(m, image_coords(m, Xh)).shifted
        fired_other += check_coords(m, image_coords(m, Xo)).shifted
    assert fired_same <= 2 and fired_other >= 38


def test_class_mix_alone_does_not_fire():
    rng = np.random.default_rng(1)
    X, y = _site(rng, 900)
    ood = OOD.fit(X, k=16)
    m = _M(ood, fit_shift(ood, [("A", X, y, np.arange(len(X)))], seed=0))
    Xn, yn = _site(np.random.default_rng(5), 400)
    for c in ("normal", "benign", "malignant"):
        assert not check_coords(m, image_coords(m, Xn[yn == c][:40])).shifted, c


def test_small_batches_and_models_without_statistics_are_not_checked():
    rng = np.random.default_rng(2)
    X, y = _site(rng, 300)
    ood = OOD.fit(X, k=8)
    m = _M(ood, fit_shift(ood, [("A", X, y, np.arange(len(X)))], seed=0))
    Xo, _ = _site(rng, 19, shift=3.0)
    c = check_coords(m, image_coords(m, Xo))
    assert not c.checked and not c.shifted and c.warning is None
    assert image_coords(_M(ood, None), Xo) is None
    assert not check_coords(_M(ood, None), [None] * 30).checked


def test_two_sites_a_batch_like_either_does_not_fire():
    rng = np.random.default_rng(3)
    Xa, ya = _site(rng, 400)
    Xb, yb = _site(rng, 400, shift=4.0)
    ood = OOD.fit(np.concatenate([Xa, Xb]), k=16)
    m = _M(ood, fit_shift(ood, [("A", Xa, ya, np.arange(400)), ("B", Xb, yb, np.arange(400))], seed=0))
    for shift, fires in ((0.0, False), (4.0, False), (10.0, True), (-6.0, True)):
        Xn, _ = _site(np.random.default_rng(9), 40, shift=shift)
        assert check_coords(m, image_coords(m, Xn)).shifted is fires, shift


def test_shift_info_roundtrips_and_bad_sections_are_refused():
    rng = np.random.default_rng(4)
    X, y = _site(rng, 200)
    ood = OOD.fit(X, k=8)
    info = fit_shift(ood, [("A", X, y, np.arange(200))], seed=0)
    back = ShiftInfo.from_json(json.loads(json.dumps(info.to_json())))
    assert back.sites[0].threshold == info.sites[0].threshold
    bad = info.to_json()
    bad["sites"][0]["precision"] = [[1.0]]
    with pytest.raises(Exception, match="precision"):
        ShiftInfo.from_json(bad)


# ---------------------------------------------------------------- the tiny world

@pytest.fixture(scope="module")
def world(tiny_backbone, tmp_path_factory):
    base = tmp_path_factory.mktemp("shift_world")
    root = base / "busi"
    info = make_busi_tree(root, n_per_class=(10, 20, 16), seed=3, extras=False)
    cache = base / "cache.h5"
    extract(root, cache, tiny_backbone, views=("flip",) + BOX_VIEWS, log=lambda m: None, progress=False)
    fc = FeatureCache(cache)
    model, _ = fit_model(fc, Config.build(name="tiny", epochs=10, hidden=8, lr=1e-3, batch=8), seed=0, folds=3)
    model.save(base / "plain")
    add_box_head(Model.load(base / "plain"), fc, folds=3, flip=False).save(base / "boxed")
    images = sorted(root / p for p in info["images"])
    return {"base": base, "root": root, "cache": fc, "images": images, "backbone": tiny_backbone}


def _shifted_folder(images, dst: Path, kind: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for p in images:
        a = np.asarray(Image.open(p).convert("RGB")).astype(np.float32)
        if kind == "gain":
            a = a * 1.8
        elif kind == "blur":
            img = Image.fromarray(a.astype(np.uint8))
            from PIL import ImageFilter
            a = np.asarray(img.filter(ImageFilter.GaussianBlur(12))).astype(np.float32)
        elif kind == "speckle":
            a = a * rng.gamma(2.0, 0.5, a.shape[:2])[..., None]
        elif kind == "tint":
            a = a * np.array([1.0, 0.6, 0.3])
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(dst / p.name, compress_level=1)
    return dst


def test_card_has_shift_statistics_and_loads(world):
    m = Model.load(world["base"] / "plain")
    assert m.card.shift is not None and m.card.shift.sites[0].name == "busi"
    again = ModelCard.from_json(json.loads(json.dumps(m.card.to_json())))
    assert again.shift.sites[0].threshold == m.card.shift.sites[0].threshold


def test_training_images_do_not_fire_and_shifted_images_do(world, tmp_path):
    pr = Predictor(world["base"] / "boxed", world["backbone"])
    same = pr.predict(world["images"])
    check = pr.check_batch(same)
    assert check.checked and not check.shifted
    assert all(p.recommended == WHOLE for p in same if p.ok and not p.flags)
    fired = {}
    for kind in ("gain", "blur", "speckle", "tint"):
        preds = pr.predict([_shifted_folder(world["images"], tmp_path / kind, kind)])
        fired[kind] = pr.check_batch(preds).shifted
        if fired[kind]:
            assert all(p.recommended == BOX for p in preds if p.ok)
    assert all(fired.values()), fired


def test_api_warns_once_and_json_omits_coordinates(world, tmp_path):
    folder = _shifted_folder(world["images"], tmp_path / "tint", "tint")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        preds = predict_images([folder], model=world["base"] / "boxed", backbone=world["backbone"])
    shift_w = [x for x in w if issubclass(x.category, SiteShiftWarning)]
    assert len(shift_w) == 1 and str(shift_w[0].message) == SHIFT_WARNING
    d = preds[0].to_dict()
    assert "shift_coords" not in d and d["recommended"] == BOX


def test_cli_predict_warns_once_for_a_shifted_folder(world, tmp_path):
    folder = _shifted_folder(world["images"], tmp_path / "gain", "gain")
    env = {"BUSI_LITE_BACKBONE": str(world["backbone"])}
    r = CliRunner().invoke(main, ["predict", str(folder), "--model", str(world["base"] / "boxed"), "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    assert r.output.count(SHIFT_WARNING) == 1
    recs = json.loads(r.stdout)
    assert {x["recommended"] for x in recs} == {BOX}
    r = CliRunner().invoke(main, ["predict", *map(str, world["images"][:3]), "--model",
                                  str(world["base"] / "boxed")], env=env)
    assert r.exit_code == 0 and SHIFT_WARNING not in r.output and "answer to trust" in r.output


# ---------------------------------------------------------------- real data

def test_real_busi_only_statistics_busi_held_out_quiet_busbra_fires(real_cache, real_site_cache):
    from busi_lite.training.shift import cache_site

    b, s = FeatureCache(real_cache[0]), FeatureCache(real_site_cache)
    sp = b.split(0)
    ood = OOD.fit(b.pooled("raw", sp.train))
    m = _M(ood, fit_shift(ood, [cache_site("busi", b, sp.train)], seed=0))
    assert not check_coords(m, image_coords(m, b.pooled("raw", sp.test))).shifted
    rng = np.random.default_rng(0)
    dev = image_coords(m, s.pooled("raw"))
    held = image_coords(m, b.pooled("raw", sp.test))
    assert all(check_coords(m, dev[rng.choice(len(dev), 50, replace=False)]).shifted for _ in range(20))
    assert not any(check_coords(m, held[rng.choice(len(held), 50, replace=False)]).shifted for _ in range(20))


# ---------------------------------------------------------------- web page: the session's site check

def _web_client(world):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    from starlette.testclient import TestClient

    from busi_lite.web.app import create_app

    app = create_app(Predictor(world["base"] / "boxed", world["backbone"]), max_file_mb=2, max_request_mb=50)
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


def _post(client, files):
    return client.post("/api/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files])


def test_web_session_site_check(world, tmp_path):
    c = _web_client(world)
    assert c.get("/api/info").json()["model"]["site_check_min"] == c.app.state.service.predictor.model.card.shift.batch_min
    same = _post(c, world["images"][:25]).json()
    assert all(len(r["shift_coords"]) > 0 for r in same)
    r = c.post("/api/site-check", json={"coords": [r["shift_coords"] for r in same]})
    assert r.status_code == 200 and r.json()["checked"] and not r.json()["shifted"] and r.json()["warning"] is None
    assert r.json()["recommended"] == WHOLE      # like a training site: the usual cards switch to the whole image
    assert r.json()["recommended_reason"].startswith(R_SITE)
    tinted = _post(c, sorted(_shifted_folder(world["images"], tmp_path / "tint", "tint").iterdir())[:25]).json()
    r = c.post("/api/site-check", json={"coords": [r["shift_coords"] for r in tinted]})
    assert r.json()["shifted"] and r.json()["warning"] == SHIFT_WARNING
    assert (r.json()["recommended"], r.json()["recommended_reason"]) == (BOX, R_SHIFT)   # a box-head model
    assert not c.post("/api/site-check", json={"coords": [r["shift_coords"] for r in tinted][:5]}).json()["checked"]
    for bad in ({"coords": "x"}, {"coords": [[1.0, 2.0]]}, {"nope": 1}):
        assert c.post("/api/site-check", json=bad).status_code == 400
    assert c.post("/api/site-check", content=b"not json").status_code == 400


def test_browser_box_first_and_one_site_warning(world, tmp_path):
    pytest.importorskip("playwright")
    from web_support import browser_page, running_server, upload

    from busi_lite.web.app import create_app

    app = create_app(Predictor(world["base"] / "boxed", world["backbone"]), max_file_mb=2, max_request_mb=50)
    tinted = sorted(_shifted_folder(world["images"], tmp_path / "tint", "tint").iterdir())
    with running_server(app) as url, browser_page(url) as (page, console):
        assert page.locator("ol.steps li").nth(1).inner_text().startswith("Draw a box around the lesion")
        upload(page, tinted[:12])
        assert page.locator("#site-warning").is_hidden()          # 12 images: no session check yet
        upload(page, tinted[12:30])
        assert page.locator("#site-warning").is_visible()
        assert SHIFT_WARNING in page.locator("#site-warning").inner_text()
        cards = page.locator("article.card:not(.failed)")
        assert cards.count() == 30
        assert page.locator("[data-box-first]").count() == 30    # every card asks for a box first
        assert page.locator("[data-box-cta]").count() == 30
        upload(page, tinted[30:])
        assert page.locator("#site-warning").count() == 1
        assert not console, console


def test_the_shift_check_reuses_the_ood_projection_bit_for_bit():
    """Predictor scores OOD and projects for the site check from ONE projection: the same numbers as
    OOD.score and serving.shift.ood_coords made separately, to the bit."""
    from busi_lite.model.model import OOD
    from busi_lite.serving.shift import ood_coords

    rng = np.random.default_rng(3)
    ood = OOD.fit(rng.normal(size=(60, 40)).astype(np.float32), k=8)
    X = rng.normal(size=(17, 40)).astype(np.float32) * 2
    s, u = ood.score_and_coords(X)
    assert np.array_equal(s, ood.score(X)) and np.array_equal(u, ood_coords(ood, X))
    basis = rng.normal(size=(8, 3))
    assert np.array_equal(u @ basis, ood_coords(ood, X) @ basis)
