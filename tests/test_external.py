"""External evaluation (busi_lite.evaluation.external, `busi-lite evaluate --data`), Wilson and bootstrap
intervals (busi_lite.evaluation.metrics), and one real-asset check on BUS-BRA-dev ($BUSI_LITE_SITE_DATA)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from synth import make_busi_tree, make_tiny_onnx

from busi_lite.cli import main
from busi_lite.common.errors import ModelError
from busi_lite.common.jsonio import dumps
from busi_lite.evaluation import metrics as M
from busi_lite.evaluation.external import (
    ExternalError,
    ExternalEvaluation,
    class_map,
    csv_text,
    default_cache_path,
    ensure_cache,
    evaluate_external,
)
from busi_lite.features.cache import FeatureCache, extract
from busi_lite.model.config import Config
from busi_lite.model.model import Model
from busi_lite.training.experiments import fit_model


def _quiet(_msg):
    pass


def _reject(name):
    raise ValueError(f"not strict JSON: {name}")


def make_site(root: Path, n_benign=12, n_malignant=12, seed=1) -> Path:
    """A two-class (benign/malignant) BUSI-layout folder whose file names differ from BUSI's."""
    make_busi_tree(root, n_per_class=(0, n_benign, n_malignant), seed=seed, extras=False)
    shutil.rmtree(root / "normal", ignore_errors=True)
    for f in sorted(root.glob("*/*.png")):
        f.rename(f.with_name("site-" + f.name.replace(" ", "_")))
    return root


@pytest.fixture(scope="session")
def site_world(tiny_world, tmp_path_factory):
    """A tiny 3-class model trained on a BUSI-like tree (conftest.tiny_world's tree and cache, read-only),
    and a two-class 'other site' folder."""
    base = tmp_path_factory.mktemp("site_world")
    tiny_backbone = tiny_world["backbone"]
    train_root, train_cache = tiny_world["root"], tiny_world["cache"]
    with FeatureCache(train_cache) as fc:
        model, _ = fit_model(fc, Config.build(name="tiny", epochs=30, head="plain", hidden=16, lr=1e-3, batch=8), seed=0)
    stem = base / "tiny"
    model.save(stem)
    site = make_site(base / "site")
    site_cache = base / "site.h5"
    extract(site, site_cache, tiny_backbone, views=(), log=_quiet, progress=False)
    return {"base": base, "model": stem, "train_root": train_root, "train_cache": train_cache, "site": site,
            "site_cache": site_cache, "backbone": tiny_backbone}


# ---------------------------------------------------------------- intervals

@pytest.mark.parametrize("k,n,lo,hi", [  # Newcombe (1998), Stat Med 17:857, table I, method 3 (Wilson)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = M.wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_edges_and_errors():
    assert M.wilson_interval(10, 10)[1] == 1.0 and M.wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))
    lo, hi = M.wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi  # symmetric around 1/2
    for bad in ((3, 2), (-1, 2), (1.5, 2), (True, 2)):
        with pytest.raises(ValueError):
            M.wilson_interval(*bad)


def test_bootstrap_auc_interval_matches_a_reference_resampling():
    rng = np.random.default_rng(3)
    y = rng.random(80) < 0.35
    s = rng.normal(size=80) + 1.0 * y
    lo, hi = M.bootstrap_auc_interval(y, s, n_resamples=200, seed=7)
    # reference: the documented draw order (positives, then negatives) scored by scikit-learn
    ref_rng = np.random.default_rng(7)
    pos, neg = s[y], s[~y]
    aucs = []
    for _ in range(200):
        sp = pos[ref_rng.integers(0, len(pos), len(pos))]
        sn = neg[ref_rng.integers(0, len(neg), len(neg))]
        aucs.append(roc_auc_score(np.r_[np.ones(len(sp)), np.zeros(len(sn))], np.r_[sp, sn]))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])), abs=1e-12)
    auc = M.roc_auc(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s)) and lo < auc < hi
    assert M.bootstrap_auc_interval(y, s, 200, 7) == (lo, hi)           # seeded
    assert M.bootstrap_auc_interval(y, s, 200, 8) != (lo, hi)
    # perfectly separated: every resample has AUC 1; one class absent: undefined
    assert M.bootstrap_auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 50, 0) == (1.0, 1.0)
    assert all(math.isnan(v) for v in M.bootstrap_auc_interval([1, 1], [0.1, 0.2], 50, 0))
    with pytest.raises(ValueError):
        M.bootstrap_auc_interval(y, s, 0, 0)


# ---------------------------------------------------------------- class mapping

def test_classes_mapped_by_name():
    np.testing.assert_array_equal(class_map(("normal", "benign", "malignant"), ("benign", "malignant")), [1, 2])
    np.testing.assert_array_equal(class_map(("normal", "benign", "malignant"), ("malignant",)), [2])
    with pytest.raises(ExternalError, match="fibroadenoma"):
        class_map(("normal", "benign", "malignant"), ("benign", "fibroadenoma"))


# ---------------------------------------------------------------- evaluation on a two-class folder

def test_two_class_folder_evaluation(site_world):
    m = Model.load(site_world["model"])
    with FeatureCache(site_world["site_cache"]) as fc:
        assert fc.classes == ("benign", "malignant")
        ev = evaluate_external(m, fc, n_resamples=300, seed=0)
        labels = fc.labels.copy()
    assert ev.n == 24 and ev.counts == {"benign": 12, "malignant": 12} and ev.n_malignant == 12
    assert ev.dataset_classes == ["benign", "malignant"] and ev.model_classes == ["normal", "benign", "malignant"]
    conf = np.array(ev.confusion)
    assert conf.shape == (2, 3) and conf.sum(axis=1).tolist() == [12, 12]  # normal predictions counted
    rows = ev.per_image
    # malignant truth comes from the folder NAME, the score from the model's malignant column
    y = np.array([r.true == "malignant" for r in rows])
    assert y.tolist() == (labels == 1).tolist()
    p = np.array([r.proba["malignant"] for r in rows])
    assert ev.auc == pytest.approx(roc_auc_score(y, p), abs=1e-4)   # per-image p rounded to 5 decimals
    assert ev.auc_lo <= ev.auc <= ev.auc_hi and ev.n_resamples == 300
    t = m.card.calibration.malignant_threshold
    tp = int(sum(1 for r in rows if r.true == "malignant" and r.alert))
    assert ev.operating_point.threshold == t and ev.operating_point.recall.k == tp
    assert ev.operating_point.recall.n == 12 and ev.operating_point.far.n == 12
    assert (ev.operating_point.recall.lo, ev.operating_point.recall.hi) == M.wilson_interval(tp, 12)
    pred_mal = sum(1 for r in rows if r.label == "malignant")
    assert ev.argmax.precision.n == pred_mal == conf[:, 2].sum()
    # flags on all images, as flag_eval's table
    assert ev.flags.n == 24 and ev.flags.n_errors == sum(1 for r in rows if r.label != r.true)
    assert ev.flags.any_flag.n_flagged == sum(1 for r in rows if r.flags)
    # record round trip through strict JSON
    text = dumps(ev)
    back = ExternalEvaluation.from_json(json.loads(text, parse_constant=_reject))
    assert dumps(back) == text and back.argmax == ev.argmax and back.per_image == ev.per_image  # (NaN != NaN)


def test_cli_evaluate_data_json_csv_and_table(site_world, tmp_path):
    out_csv = tmp_path / "per_image.csv"
    args = ["evaluate", "--model", str(site_world["model"]), "--data", str(site_world["site"]),
            "--cache", str(site_world["site_cache"])]
    r = CliRunner().invoke(main, args + ["--json", "--per-image", "--csv", str(out_csv)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout, parse_constant=_reject)
    assert d["schema"].startswith("external_evaluation/") and d["n"] == 24 and len(d["per_image"]) == 24
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(rows) == 24 and set(rows[0]) == {"path", "true", "p_normal", "p_benign", "p_malignant", "label",
                                                "alert", "flags"}
    assert {r["true"] for r in rows} == {"benign", "malignant"}
    assert all(r["path"].split("/")[0] == r["true"] for r in rows)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "AUC" in r.stdout and "Wilson" in r.stdout and "ANY FLAG" in r.stdout and "2000 resamples" in r.stdout
    # the flag table's headers line up with their columns: every numeric cell ends where its header ends
    lines = r.stdout.splitlines()
    h = next(i for i, ln in enumerate(lines) if ln.startswith("flag "))
    ends = [m.end() for m in re.finditer(r"\S+(?: \S+)*", lines[h])][1:]
    for row in lines[h + 2:]:
        if not row.strip():
            break
        cells = [m.end() for m in re.finditer(r"\S+", row)]
        assert "not applicable" in row or cells[-len(ends):] == ends, (lines[h], row)


def test_training_cache_refused(site_world):
    m = Model.load(site_world["model"])
    with FeatureCache(site_world["train_cache"]) as fc, pytest.raises(ExternalError, match="trained on"):
        evaluate_external(m, fc)
    r = CliRunner().invoke(main, ["evaluate", "--model", str(site_world["model"]), "--data",
                                  str(site_world["train_root"]), "--cache", str(site_world["train_cache"])])
    assert r.exit_code == 2 and "held-out split" in r.stderr


def test_other_backbone_or_preprocessing_refused(site_world, tmp_path):
    other = make_tiny_onnx(tmp_path / "other.onnx", seed=1)
    cache = tmp_path / "other.h5"
    extract(site_world["site"], cache, other, views=(), log=_quiet, progress=False)
    m = Model.load(site_world["model"])
    with FeatureCache(cache) as fc, pytest.raises(ModelError, match="backbone"):
        evaluate_external(m, fc)
    r = CliRunner().invoke(main, ["evaluate", "--model", str(site_world["model"]), "--data", str(site_world["site"]),
                                  "--cache", str(cache)])
    assert r.exit_code == 2 and "backbone" in r.stderr
    with FeatureCache(site_world["site_cache"]) as fc:
        fc.attrs["preprocess_version"] = "some-other-preprocessing"
        with pytest.raises(ExternalError, match="preprocessing"):
            evaluate_external(m, fc)


def test_ensure_cache_reuses_and_refreshes(site_world, tmp_path, monkeypatch):
    site = make_site(tmp_path / "clinic", n_benign=3, n_malignant=3, seed=4)
    monkeypatch.chdir(tmp_path)
    assert default_cache_path(site) == Path("cache") / "clinic_features.h5"
    path = ensure_cache(site, None, site_world["backbone"], log=_quiet)
    assert path == Path("cache/clinic_features.h5") and path.is_file()
    before = path.stat().st_mtime_ns
    assert ensure_cache(site, None, site_world["backbone"], log=_quiet) == path
    assert path.stat().st_mtime_ns == before                      # same images: reused, not rewritten
    shutil.copy(site / "benign" / "site-benign_(1).png", site / "benign" / "site-benign_(9).png")
    ensure_cache(site, None, site_world["backbone"], log=_quiet)
    with FeatureCache(path) as fc:
        assert len(fc) == 7 and "benign/site-benign_(9).png" in fc.paths


def test_csv_text_needs_rows(site_world):
    m = Model.load(site_world["model"])
    with FeatureCache(site_world["site_cache"]) as fc:
        ev = evaluate_external(m, fc, n_resamples=10, per_image=False)
    assert ev.per_image is None and "per_image" not in ev.to_json()
    with pytest.raises(ExternalError):
        csv_text(ev)


# ---------------------------------------------------------------- real assets (BUS-BRA-dev)

def test_real_default_model_on_busbra_dev(real_site, real_site_cache):
    cache = real_site_cache  # raw + flip: the default model averages
    m = Model.load()  # the committed default model (BUSI split-0 training images + all of BUS-BRA-dev)
    with FeatureCache(cache) as fc:
        ev = evaluate_external(m, fc, data_root=real_site)
    assert ev.n == 532 and ev.counts == {"benign": 367, "malignant": 165}
    assert 0.6 <= ev.auc <= 1.0 and ev.auc_lo < ev.auc < ev.auc_hi   # in-sample: the model trained on these images
    # no path shared with BUSI's held-out images; the site check recognises a training site: not zero-shot
    assert len(ev.notes) == 1 and "training site(s) BUS-BRA-dev" in ev.notes[0] and "not zero-shot" in ev.notes[0]


def test_an_unreadable_file_is_skipped_and_named_never_blocks_evaluate_or_calibrate(site_world, tmp_path):
    site = make_site(tmp_path / "clinic", n_benign=4, n_malignant=4, seed=5)
    (site / "benign" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 20)   # truncated DICOM
    cache = tmp_path / "clinic.h5"
    r = CliRunner().invoke(main, ["extract", "--data", str(site), "--out", str(cache), "--backbone",
                                  str(site_world["backbone"])])
    assert r.exit_code == 0, r.output + r.stderr
    args = ["--model", str(site_world["model"]), "--data", str(site), "--cache", str(cache),
            "--backbone", str(site_world["backbone"])]
    for _ in range(2):                              # the second run reuses the cache and names the file again
        r = CliRunner().invoke(main, ["evaluate", *args, "--json"])
        assert r.exit_code == 0, r.stderr
        assert "broken.dcm" in r.stderr and json.loads(r.stdout)["n"] == 8
    r = CliRunner().invoke(main, ["calibrate", *args, "--out", str(tmp_path / "cal")])
    assert r.exit_code == 0 and "broken.dcm" in r.stderr, r.stderr
