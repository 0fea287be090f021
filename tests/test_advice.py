"""Which answer to trust (serving.advice): the rule table, the site given (--site / site=), and every
face of it: CLI (human, JSON, CSV), Python API, web API and page, `evaluate --data --site`.

Synthetic: the shared tiny world (a model without a box head) plus, built here, the same model with
a box head. Real (when present): the shipped model (BUSI + BUS-BRA-dev, box head) on one held-out
BUSI image: box first without a site, the whole image with --site BUSI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from busi_lite.cli import main
from busi_lite.common.errors import ConfigError
from busi_lite.model.provenance import Provenance
from busi_lite.serving.advice import (
    BOX,
    R_NO_BOX,
    R_SHIFT,
    R_SITE,
    R_UNUSUAL,
    WHOLE,
    answer,
    site_status,
)
from busi_lite.serving.inference import Predictor, predict_images
from busi_lite.serving.shift import ShiftCheck
from busi_lite.serving.verdict import screen_sentence

REPO = Path(__file__).resolve().parents[1]


def _pv(sites=("BUSI", "BUS-BRA-dev"), origin="training", site=None) -> Provenance:
    return Provenance("m", "d" * 64, None, None, 0.1, origin, 0.95, 0.5, site=site, training_sites=tuple(sites))


PASSED = ShiftCheck(40, True, False, 20, [{"name": "BUSI", "statistic": 3.0, "threshold": 9.0},
                                          {"name": "BUS-BRA-dev", "statistic": 30.0, "threshold": 9.0}])
SHIFTED = ShiftCheck(40, True, True, 20, [{"name": "BUSI", "statistic": 30.0, "threshold": 9.0}])
TOO_FEW = ShiftCheck(1, False, False, 20, reason="fewer than 20 images: no batch check")
NO_STATS = ShiftCheck(1, False, False, reason="this model has no site-shift statistics")
BUSI, OSLO, NONE = site_status(_pv(), "BUSI"), site_status(_pv(), "Oslo"), site_status(_pv(), None)


# ---------------------------------------------------------------- the rule, case by case

@pytest.mark.parametrize("has_box, check, site, unusual, want, reason", [
    # 1. the batch check fired: box, whatever the site given
    (True, SHIFTED, NONE, False, BOX, R_SHIFT),
    (True, SHIFTED, BUSI, False, BOX, R_SHIFT + " (though the images are said to come from site BUSI)"),
    # 2. an unusual image: box, even in a batch like a training site or at a validated site
    (True, PASSED, NONE, True, BOX, R_UNUSUAL),
    (True, TOO_FEW, BUSI, True, BOX, R_UNUSUAL),
    # 3. the batch looks like a training site: whole image, even for a site name the model does not know
    (True, PASSED, NONE, False, WHOLE, R_SITE + " (BUSI)"),
    (True, PASSED, OSLO, False, WHOLE, R_SITE + " (BUSI)"),
    # 4. a validated site given: whole image
    (True, TOO_FEW, BUSI, False, WHOLE, "the images come from site BUSI, one this model was trained on"),
    (True, None, BUSI, False, WHOLE, "the images come from site BUSI, one this model was trained on"),
    # 5. not validated: box, and the reason says why
    (True, TOO_FEW, NONE, False, BOX, "no site given and fewer images than the site check needs (20)"),
    (True, NO_STATS, NONE, False, BOX, "no site given and this model has no site statistics to check the site with"),
    (True, None, NONE, False, BOX, "no site given and the site was not checked"),
    (True, None, None, False, BOX, "no site given and the site was not checked"),
    (True, TOO_FEW, OSLO, False, BOX,
     "this model was never validated on site Oslo (trained on BUSI, BUS-BRA-dev; not calibrated there)"),
    # a model without a box head answers with the whole image, and says when it is not validated there
    (False, SHIFTED, NONE, False, WHOLE, f"{R_NO_BOX}; {R_SHIFT}: the verdict is not validated here"),
    (False, TOO_FEW, OSLO, False, WHOLE, f"{R_NO_BOX}; this model was never validated on site Oslo (trained on "
                                         "BUSI, BUS-BRA-dev; not calibrated there): the verdict is not validated here"),
    (False, TOO_FEW, BUSI, False, WHOLE, "the images come from site BUSI, one this model was trained on"),
    (False, PASSED, NONE, False, WHOLE, R_SITE + " (BUSI)"),
])
def test_the_rule_table(has_box, check, site, unusual, want, reason):
    assert answer(has_box, check, site, unusual) == (want, reason)


def test_site_names_compare_case_insensitively_and_take_the_cards_spelling():
    st = site_status(_pv(), "  bus-bra-DEV ")
    assert st.validated and st.name == "BUS-BRA-dev" and st.text.startswith("site BUS-BRA-dev: validated")
    assert site_status(_pv(), "   ").name is None and site_status(_pv(), "").name is None
    unknown = site_status(_pv(), "Oslo")
    assert not unknown.validated and unknown.name == "Oslo" and "NOT validated" in unknown.text
    assert site_status(_pv(), None).text.startswith("site not given")
    assert not site_status(None, "BUSI").validated          # a model without provenance is validated nowhere


def test_a_site_calibration_validates_its_site_only_while_its_threshold_is_used():
    cal = _pv(origin="site", site="Oslo-2024")
    st = site_status(cal, "oslo-2024")
    assert st.validated and st.name == "Oslo-2024" and "calibrated" in st.reason
    assert answer(True, TOO_FEW, st) == (WHOLE, "the images come from site Oslo-2024, where this model's threshold "
                                                "was calibrated")
    other = site_status(cal, "Bergen")
    assert not other.validated and "calibrated on Oslo-2024, not there" in other.reason
    # a hand-set threshold replaces the calibrated one: the calibration no longer vouches for the verdict
    assert not site_status(_pv(origin="override", site=None), "Oslo-2024").validated


@pytest.mark.parametrize("bad", [3, b"BUSI", "x" * 101, "BUSI\nOslo"])
def test_a_bad_site_name_is_a_clear_error_naming_the_parameter(bad):
    with pytest.raises(ConfigError) as e:
        site_status(_pv(), bad)
    assert e.value.param == "site"


# ---------------------------------------------------------------- the tiny world, with and without a box head

@pytest.fixture(scope="module")
def boxed(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's model plus a box head (trained here on a cache of the world's box views)."""
    from busi_lite.features.cache import FeatureCache, extract
    from busi_lite.features.views import BOX_VIEWS
    from busi_lite.model.model import Model
    from busi_lite.training.box import add_box_head

    base = tmp_path_factory.mktemp("advice_boxed")
    extract(tiny_world["root"], base / "cache.h5", tiny_world["backbone"], views=("flip",) + BOX_VIEWS, log=lambda m: None,
            progress=False)
    add_box_head(Model.load(tiny_world["model"]), FeatureCache(base / "cache.h5"), folds=3, flip=False).save(
        base / "boxed")
    return base / "boxed"


def _usual_image(tiny_world, model) -> Path:
    """An image of the world the model does not find unusual (the rule's 'usual' branch)."""
    pr = Predictor(model, tiny_world["backbone"])
    for p in pr.predict(tiny_world["images"][:12]):
        if p.ok and not any(f.name == "unusual_input" for f in p.flags):
            return Path(p.path)
    raise AssertionError("every image of the tiny world is unusual to its own model")


def test_python_api_one_image_box_first_unless_the_site_is_validated(tiny_world, boxed):
    img = _usual_image(tiny_world, boxed)
    bb = tiny_world["backbone"]
    (p,) = Predictor(boxed, bb).predict([img])
    assert (p.recommended, p.recommended_reason) == (BOX, "no site given and fewer images than the site check "
                                                          "needs (20)")
    pr = Predictor(boxed, bb, site="BUSI")        # the world's site is its folder's name, 'busi'
    assert pr.site.validated and pr.site.name == "busi"
    (p,) = pr.predict([img])
    assert (p.recommended, p.recommended_reason) == (WHOLE, "the images come from site busi, one this model was "
                                                            "trained on")
    (p,) = predict_images([img], model=boxed, backbone=bb, site="Oslo")
    assert p.recommended == BOX and "never validated on site Oslo (trained on busi; not calibrated there)" in \
        p.recommended_reason
    (p,) = Predictor(boxed, bb, site="busi").predict_arrays([np.asarray(Image.open(img).convert("RGB"))])
    assert p.recommended == WHOLE
    # a model without a box head keeps the whole image, and says it is not validated there
    (p,) = Predictor(tiny_world["model"], bb).predict([img])
    assert p.recommended == WHOLE and p.recommended_reason.startswith(R_NO_BOX) and \
        p.recommended_reason.endswith("the verdict is not validated here")
    (p,) = Predictor(tiny_world["model"], bb, site="busi").predict([img])
    assert (p.recommended, p.recommended_reason) == (WHOLE, "the images come from site busi, one this model was "
                                                            "trained on")


def test_cli_predict_with_and_without_site(tiny_world, boxed):
    img = str(_usual_image(tiny_world, boxed))
    env = {"BUSI_LITE_BACKBONE": str(tiny_world["backbone"]), "BUSI_LITE_SITE": ""}
    run = CliRunner().invoke
    r = run(main, ["predict", img, "--model", str(boxed)], env=env)
    assert r.exit_code == 0, r.output
    assert "answer to trust: the LESION BOX answer" in r.stdout and "no site given" in r.stdout
    assert "site not given" in r.stderr and "--site NAME" in r.stderr
    r = run(main, ["predict", img, "--model", str(boxed), "--site", "Busi", "--json"], env=env)
    (rec,) = json.loads(r.stdout)
    assert rec["recommended"] == WHOLE and "site busi" in rec["recommended_reason"]
    assert "site busi: validated" in r.stderr
    r = run(main, ["predict", img, "--model", str(boxed), "--csv"], env={**env, "BUSI_LITE_SITE": "Oslo"})
    header, row = r.stdout.splitlines()[:2]
    assert row.split(",")[header.split(",").index("recommended")] == BOX and "never validated on site Oslo" in row
    assert "note: this model was never validated on site Oslo" in r.stderr
    r = run(main, ["predict", img, "--model", str(tiny_world["model"]), "--site", "Oslo"], env=env)
    assert r.exit_code == 0 and "answer to trust: the whole-image verdict (this model has no lesion-box head; " \
        "this model was never validated on site Oslo" in r.stdout
    r = run(main, ["predict", img, "--model", str(boxed), "--site", "a\tb"], env=env)
    assert r.exit_code != 0 and "site" in r.output


def test_cli_evaluate_site_labels_the_figures(tiny_world, tmp_path):
    from synth import make_busi_tree

    make_busi_tree(tmp_path / "other", n_per_class=(4, 6, 6), seed=11, extras=False)   # not the training images
    env = {"BUSI_LITE_BACKBONE": str(tiny_world["backbone"])}
    base = ["evaluate", "--model", str(tiny_world["model"]), "--data", str(tmp_path / "other"),
            "--cache", str(tmp_path / "c.h5"), "--json"]
    r = CliRunner().invoke(main, [*base, "--site", "BUSI"], env=env)
    assert r.exit_code == 0, r.output
    assert any("site busi, one this model was trained on: these figures are not zero-shot" in n
               for n in json.loads(r.stdout)["notes"])
    r = CliRunner().invoke(main, [*base, "--site", "Oslo"], env=env)
    assert any("never validated on site Oslo" in n and "zero-shot there" in n for n in json.loads(r.stdout)["notes"])
    r = CliRunner().invoke(main, ["evaluate", "--model", str(tiny_world["model"]), "--cache",
                                  str(tiny_world["cache"]), "--site", "BUSI"], env=env)
    assert r.exit_code == 2 and "--site goes with --data" in r.output
    r = CliRunner().invoke(main, ["evaluate", "--model", str(tiny_world["model"]), "--cache",
                                  str(tiny_world["cache"]), "--json"], env={**env, "BUSI_LITE_SITE": "BUSI"})
    assert r.exit_code == 0, r.output          # the environment's site does not stop the held-out evaluation


def _client(predictor):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    from starlette.testclient import TestClient

    from busi_lite.web.app import create_app

    return TestClient(create_app(predictor, max_file_mb=2, max_request_mb=50), raise_server_exceptions=False,
                      base_url="http://127.0.0.1")


def test_web_api_names_the_site_and_one_image_gets_box_first(tiny_world, boxed):
    img = _usual_image(tiny_world, boxed)
    files = [("files", (img.name, img.read_bytes(), "image/png"))]
    c = _client(Predictor(boxed, tiny_world["backbone"]))
    site = c.get("/api/info").json()["site"]
    assert site["name"] is None and not site["validated"] and site["text"].startswith("site not given")
    (rec,) = c.post("/api/predict", files=files).json()
    assert rec["recommended"] == BOX and rec["recommended_reason"].startswith("no site given")
    c = _client(Predictor(boxed, tiny_world["backbone"], site="busi"))
    assert c.get("/api/info").json()["site"]["validated"]
    (rec,) = c.post("/api/predict", files=files).json()
    assert rec["recommended"] == WHOLE
    # the screen in words comes from the server (serving.verdict), the page does not word it again
    (p,) = Predictor(boxed, tiny_world["backbone"]).predict([img])
    assert rec["screen"] == screen_sentence(p) and rec["screen"].startswith("p(malignant) ")


def test_browser_one_image_asks_for_a_box_before_any_whole_image_headline(tiny_world, boxed):
    pytest.importorskip("playwright")
    from web_support import browser_page, running_server, upload

    from busi_lite.web.app import create_app

    img = _usual_image(tiny_world, boxed)
    others = [p for p in tiny_world["images"] if p != img][:24]
    app = create_app(Predictor(boxed, tiny_world["backbone"]), max_file_mb=2, max_request_mb=50)
    with running_server(app) as url, browser_page(url) as (page, console):
        assert page.locator("#model-site").inner_text().startswith("site not given")
        assert "trained on" in page.locator("#model-sources").inner_text()
        upload(page, [img])
        card = page.locator("article.card").first
        assert card.locator("[data-box-first]").count() == 1          # asks for a box first
        assert "not validated here (no site given" in card.locator("[data-box-first]").inner_text()
        # the whole-image verdict is folded away, not the headline
        assert card.locator("details.whole-secondary [data-answer]").count() == 1
        assert not card.locator("details.whole-secondary [data-answer]").is_visible()
        assert card.locator("[data-trust=whole_image]").count() == 0
        upload(page, others)                  # 25 images like the training site: the session check passes
        first = page.locator(f"article.card[data-file='{img.name}']")
        assert first.locator("[data-box-first]").count() == 0
        assert first.locator("[data-trust=whole_image]").is_visible()
        assert page.locator("#site-warning").is_hidden()
        assert "whole_image" in page.evaluate("() => window.busiCsv()")
        assert not console, console
    app = create_app(Predictor(boxed, tiny_world["backbone"], site="BUSI"), max_file_mb=2, max_request_mb=50)
    with running_server(app) as url, browser_page(url) as (page, console):
        assert page.locator("#model-site").inner_text().startswith("site busi: validated")
        upload(page, [img])
        card = page.locator("article.card").first
        assert card.locator("[data-box-first]").count() == 0
        assert card.locator("[data-trust=whole_image]").is_visible()
        (p,) = Predictor(boxed, tiny_world["backbone"]).predict([img])
        assert card.locator("[data-alert]").inner_text().endswith(screen_sentence(p))
        assert not console, console


# ---------------------------------------------------------------- the shipped model, real data

def test_real_shipped_model_one_busi_image_box_first_unless_site_busi(real_data, real_backbone):
    from web_support import held_out_images

    model = REPO / "weights" / "busi_lite_default"
    plain, busi = Predictor(model, real_backbone), Predictor(model, real_backbone, site="BUSI")
    assert plain.supports_box and not plain.site.validated and busi.site.validated
    for img in held_out_images(model, real_data)[:10]:     # held-out BUSI images; the first usual one
        (p,) = plain.predict([img])
        if not any(f.name == "unusual_input" for f in p.flags):
            break
    else:
        raise AssertionError("10 held-out BUSI images all unusual to the shipped model")
    assert (p.recommended, p.recommended_reason) == (BOX, "no site given and fewer images than the site check "
                                                          "needs (20)")
    (q,) = busi.predict([img])
    assert (q.recommended, q.recommended_reason) == (WHOLE, "the images come from site BUSI, one this model was "
                                                            "trained on")
    r = CliRunner().invoke(main, ["predict", str(img), "--model", str(model), "--backbone", str(real_backbone),
                                  "--site", "busi", "--json"], env={"BUSI_LITE_SITE": ""})
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["recommended"] == WHOLE

