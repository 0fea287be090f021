"""Site calibration (busi_lite.evaluation.sitecal, `busi-lite calibrate`): threshold rule, warning rule,
a NEW model that differs only in its card, never overwriting."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_external import make_site, site_world  # noqa: F401  (session fixture shared with test_external)

from busi_lite.cli import main
from busi_lite.evaluation import metrics as M
from busi_lite.evaluation import sitecal as S
from busi_lite.evaluation.external import MALIGNANT, evaluate_external, predict_cache
from busi_lite.features.cache import FeatureCache
from busi_lite.model.model import Model
from busi_lite.model.records import RecordError, SiteCalibration


def _reject(name):
    raise ValueError(f"not strict JSON: {name}")


def _hand_case(n_mal=10, n_ben=10):
    """Malignant p = 0.1, 0.2, ..., 1.0 (for n_mal = 10); benign p = 0.05, 0.15, ... (interleaved)."""
    p_mal = np.arange(1, n_mal + 1) / n_mal
    p_ben = (np.arange(1, n_ben + 1) - 0.5) / n_ben
    return np.r_[np.ones(n_mal, bool), np.zeros(n_ben, bool)], np.r_[p_mal, p_ben]


def test_threshold_is_the_highest_reaching_the_target():
    y, p = _hand_case()
    sc = S.fit_site_calibration(y, p, 0.9, "site-a", previous_threshold=0.5, previous_target_recall=0.95)
    # 9 of the 10 malignant scores are >= 0.2; any higher threshold keeps only 8
    assert sc.threshold == pytest.approx(0.2) and sc.recall == pytest.approx(0.9)
    assert ((p[y] >= sc.threshold + 1e-9).mean()) < 0.9
    # benign scores 0.25, 0.35, ..., 0.95 are >= 0.2: 8 of 10
    assert sc.far == pytest.approx(0.8) and (sc.far_lo, sc.far_hi) == M.wilson_interval(8, 10)
    assert (sc.recall_lo, sc.recall_hi) == M.wilson_interval(9, 10)
    assert sc.n_cases == 20 and sc.n_malignant == 10 and sc.previous_threshold == 0.5
    assert S.choose_threshold(y, p, 0.5) == pytest.approx(0.6)


def test_warning_rule():
    y, p = _hand_case()                                        # 10 malignant (< 30): warns
    assert "too few" in S.fit_site_calibration(y, p, 0.9, "a", 0.5, 0.95).warning
    y, p = _hand_case(40, 40)                                  # 40 malignant, 36/40: Wilson lo 0.77 < 0.85
    assert M.wilson_interval(36, 40)[0] < 0.85
    assert S.fit_site_calibration(y, p, 0.9, "a", 0.5, 0.95).warning is not None
    y, p = _hand_case(400, 100)                                # 360/400: Wilson lo 0.867 >= 0.85: no warning
    assert M.wilson_interval(360, 400)[0] >= 0.85
    assert S.fit_site_calibration(y, p, 0.9, "a", 0.5, 0.95).warning is None


def test_bad_inputs_refused():
    y, p = _hand_case()
    for target in (0, 1, 1.2, float("nan"), True):
        with pytest.raises(S.SiteError):
            S.fit_site_calibration(y, p, target, "a", 0.5, 0.95)
    for name in ("", "../up", "a/b", ".hidden", "x" * 81):
        with pytest.raises(S.SiteError):
            S.fit_site_calibration(y, p, 0.9, name, 0.5, 0.95)
    with pytest.raises(S.SiteError, match="malignant"):
        S.fit_site_calibration(np.zeros(5, bool), np.linspace(0, 1, 5), 0.9, "a", 0.5, 0.95)
    assert S.default_out("weights/m", "site-a") == Path("weights/m_site-site-a")
    assert S.default_out("/x/m.json", "b") == Path("/x/m_site-b")


def test_record_round_trip():
    y, p = _hand_case()
    sc = S.fit_site_calibration(y, p, 0.9, "a", 0.5, 0.95, data_root="/data/a")
    assert SiteCalibration.from_json(json.loads(json.dumps(sc.to_json()))) == sc
    with pytest.raises(RecordError, match="threshold"):
        SiteCalibration.from_json(dict(sc.to_json(), threshold=2.0))


def test_cli_calibrate_new_model_never_overwrites(site_world, tmp_path):  # noqa: F811
    out = tmp_path / "tiny_siteA"
    args = ["calibrate", "--model", str(site_world["model"]), "--data", str(site_world["site"]),
            "--cache", str(site_world["site_cache"]), "--target-recall", "0.9", "--name", "siteA",
            "--out", str(out)]
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout, parse_constant=_reject)
    assert d["site"] == "siteA" and d["n_cases"] == 24 and d["n_malignant"] == 12
    assert "WARNING" in r.stderr and "too few" in r.stderr      # 12 malignant cases < 30
    old, new = Model.load(site_world["model"]), Model.load(out)  # load checks the weights' SHA-256
    # only the card's threshold (and site section) changed; the weights are the same arrays
    assert old.head.params.keys() == new.head.params.keys()
    assert all(np.array_equal(old.head.params[k], new.head.params[k]) for k in old.head.params)
    assert np.array_equal(old.ood.components, new.ood.components) and old.ood.threshold == new.ood.threshold
    site = new.card.site
    assert site.threshold == new.card.calibration.malignant_threshold == d["threshold"]
    assert site.previous_threshold == old.card.calibration.malignant_threshold
    assert site.warning and new.card.calibration.target_recall == 0.9
    assert math.isnan(new.card.calibration.oof_far_at_threshold)
    assert new.card.calibration.low_confidence == old.card.calibration.low_confidence
    assert new.card.test_predictions.path == old.card.test_predictions.path
    # the new threshold reaches the target on the calibration cases
    with FeatureCache(site_world["site_cache"]) as fc:
        pr = predict_cache(new, fc)
    mal = list(new.classes).index(MALIGNANT)
    y = pr.y == mal
    assert (pr.proba[y, mal] >= new.card.calibration.malignant_threshold).mean() >= 0.9
    # evaluating the new model on the same folder says the operating point is in-sample
    with FeatureCache(site_world["site_cache"]) as fc:
        ev = evaluate_external(new, fc, n_resamples=10, data_root=site_world["site"])
    assert any("in-sample" in n for n in ev.notes) and ev.operating_point.recall.value >= 0.9
    # the calibrated model can be told from the one it came from, in every face
    from busi_lite.model.provenance import provenance
    from busi_lite.serving.info import collect

    pa, pb = provenance(old), provenance(new, str(out), "option")
    assert pb.name == f"{old.card.config.name}@siteA" and pb.name != pa.name
    assert pb.digest != pa.digest and len(pb.digest) == 64
    assert pb.digest == hashlib.sha256(out.with_suffix(".json").read_bytes() + out.with_suffix(".npz").read_bytes()).hexdigest()
    assert pa.threshold_origin == "training" and pb.threshold_origin == "site"
    assert pb.threshold_source == "calibrated on site siteA (24 cases, 12 malignant; in-sample)"
    facts = collect(model=out)
    assert facts.model.details["name"] == pb.name and facts.model.details["digest"] == pb.digest
    assert facts.model.details["threshold_source"] == pb.threshold_source
    # a second run refuses to overwrite and leaves the files as they were
    before = {p: p.read_bytes() for p in (out.with_suffix(".npz"), out.with_suffix(".json"))}
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "never" in r.stderr and "--out" in r.stderr
    assert all(p.read_bytes() == b for p, b in before.items())
    # an existing .json alone is enough to refuse
    lone = tmp_path / "lone"
    lone.with_suffix(".json").write_text("{}")
    r = CliRunner().invoke(main, args[:-1] + [str(lone)])
    assert r.exit_code == 2 and lone.with_suffix(".json").read_text() == "{}" and not lone.with_suffix(".npz").exists()


def test_cli_calibrate_default_out_and_training_data_refused(site_world, tmp_path):  # noqa: F811
    model = tmp_path / "m"
    src = Model.load(site_world["model"])
    src.save(model)
    r = CliRunner().invoke(main, ["calibrate", "--model", str(model), "--data", str(site_world["site"]),
                                  "--cache", str(site_world["site_cache"])])
    assert r.exit_code == 0, r.output
    made = tmp_path / f"m_site-{site_world['site'].name}"
    assert Model.load(made).card.site.site == site_world["site"].name and "saved the new model" in r.stdout
    r = CliRunner().invoke(main, ["calibrate", "--model", str(model), "--data", str(site_world["train_root"]),
                                  "--cache", str(site_world["train_cache"]), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "trained on" in r.stderr and not (tmp_path / "x.npz").exists()
