"""Faults of a model's life (issue 9 items 1, 5-8; issue 10 select): a damaged, diverged or
half-written model never gives a clean answer.

Tiny models are built by hand (a plain head with 4 hidden units, OOD statistics of random
features, the committed default's card as a template); only the CLI tests train, on the
synthetic cache.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from busi_lite.cli import main
from busi_lite.common import resources
from busi_lite.common.atomic import atomic_path
from busi_lite.common.errors import BusiError, ModelError
from busi_lite.features.cache import FeatureCache
from busi_lite.heads import PlainHead, fit
from busi_lite.heads.base import TrainingError
from busi_lite.model.card import ModelCard
from busi_lite.model.config import Config
from busi_lite.model.model import OOD, Model
from busi_lite.model.records import RunResult, SelectionResult, SelectionRow
from busi_lite.serving.flags import FlagConfig, compute_flags
from busi_lite.training import experiments as E
from busi_lite.training.core import auc_interval, calibrate, chance_warnings

D = 1280


# --------------------------------------------------------------------------- helpers
def _card() -> ModelCard:
    side = json.loads(resources.packaged("model").with_suffix(".json").read_text())
    side.pop("weights_sha256", None)
    for k in ("box", "shift", "sources"):  # the tiny models here have no lesion-box head, site statistics or sources
        side.pop(k, None)
    side["config"] = {k: v for k, v in side["config"].items() if k not in ("C", "flip", "params", "base")} | {"head": "plain"}
    side["head"] = {"kind": "plain", "n_features": D, "n_hidden": 100, "n_classes": 3}  # save() rewrites it
    return ModelCard.from_json(side, "template")


def tiny_model(seed=0, hidden=4) -> Model:
    rng = np.random.default_rng(seed)
    ood = OOD.fit(rng.normal(size=(20, D)).astype(np.float32), k=4)
    ood.threshold = 2.0
    return Model(PlainHead(D, hidden, 3, seed=seed), _card(), ood)


def _arrays(npz):
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _reseal(npz, js):
    """Record the .npz's current SHA-256 in the sidecar (a deliberate edit, not a torn save)."""
    side = json.loads(js.read_text())
    side["weights_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    js.write_text(json.dumps(side))


@pytest.fixture()
def saved(tmp_path):
    npz, js = tiny_model().save(tmp_path / "m")
    return tmp_path / "m", npz, js


# --------------------------------------------------------------------------- 1. NaN / inf
@pytest.mark.parametrize("key", ["head.W2", "head.b1", "ood.mean", "ood.scales"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_or_ood_statistics_refused_at_load(saved, key, bad):
    stem, npz, js = saved
    arrays = _arrays(npz)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = bad
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    _reseal(npz, js)  # so only the values are wrong
    with pytest.raises(ModelError, match=rf"m\.npz: array '{key}' holds NaN or inf -> the model is damaged"):
        Model.load(stem)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["calibration"].update(low_confidence=float("nan")), "low_confidence"),
    (lambda d: d["calibration"].update(malignant_threshold=float("inf")), "malignant_threshold"),
    (lambda d: d["ood"].update(threshold=float("nan")), "threshold"),
    (lambda d: d["ood"].update(threshold=float("inf")), "threshold"),
    (lambda d: d["ood"].update(resid_var=float("nan")), "resid_var"),
])
def test_non_finite_thresholds_refused_at_load(saved, edit, field):
    stem, _, js = saved
    d = json.loads(js.read_text())
    edit(d)
    js.write_text(json.dumps(d))  # json writes NaN / Infinity
    with pytest.raises(ModelError, match=field):
        Model.load(stem)


def test_save_refuses_non_finite_weights(tmp_path):
    m = tiny_model()
    m.head.params["W1"][0, 0] = np.nan
    with pytest.raises(ModelError, match="W1"):
        m.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 5. divergence
def test_fit_detects_divergence():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, D)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    for lr in (1e6, 1.0):
        with pytest.raises(TrainingError, match=r"training diverged at epoch \d+ \(loss .*-> lower the learning rate"):
            fit(PlainHead(D, 100, 3, seed=0), X, y, lr=lr, batch_size=8, epochs=5, seed=0)
    h = PlainHead(D, 100, 3, seed=0)
    hist = fit(h, X, y, lr=1e-3, batch_size=8, epochs=5, seed=0)  # a sane rate trains
    assert hist["train_loss"][-1] < hist["train_loss"][0]


def test_low_confidence_flag_fires_for_constant_probabilities():
    """A dead model answers 1/3 everywhere; its calibrated low-confidence threshold is 1/3."""
    y = np.repeat([0, 1, 2], 10)
    proba = np.full((30, 3), 1 / 3, np.float32)
    cal = calibrate({"y": y, "proba": proba, "ood": np.zeros(30), "lesion": None})
    thr = {"low_confidence": cal.low_confidence, "lesion_threshold": None, "lesion_absent": None,
           "lesion_present": None, "ood_threshold": None}
    flags, checks = compute_flags(proba[:2], None, None, ["normal", "benign", "malignant"], thr, FlagConfig())
    assert [c["low_confidence"] for c in checks] == ["flagged", "flagged"]
    assert all(any(f.name == "low_confidence" for f in fl) for fl in flags)


def test_chance_auc_is_a_warning():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    const = {"y": y, "proba": np.full((120, 3), 1 / 3)}
    noise = {"y": y, "proba": rng.dirichlet([1, 1, 1], 120)}
    good = np.full((120, 3), 0.1)
    good[np.arange(120), y] = 0.8
    assert any("at chance" in m for m in chance_warnings(const)) and chance_warnings(noise)
    assert chance_warnings({"y": y, "proba": good}) == []
    auc, lo, hi = auc_interval(y == 2, good[:, 2])
    assert auc == 1.0 and lo > 0.9 and hi == 1.0


def test_collapsed_or_uninformative_training_is_marked_and_noise_never_passes():
    rng = np.random.default_rng(1)
    y = rng.choice(3, size=640, p=[0.56, 0.27, 0.17])          # BUSI-like class frequencies
    # collapsed as with `train --lr 0.3`: all ~1/3, with a faint trace of signal (AUC ~0.57)
    collapsed = np.full((640, 3), 1 / 3) + 1e-4 * rng.normal(size=(640, 3))
    collapsed[:, 2] += 2e-4 * (y == 2)
    w = chance_warnings({"y": y, "proba": collapsed})
    assert any("nearly constant" in m for m in w) and any("no information" in m for m in w)
    # predictions unrelated to the labels, of every sharpness, never pass the information test
    passed = 0
    for seed in range(300):
        r = np.random.default_rng(seed)
        noise = r.dirichlet(np.full(3, [0.3, 1.0, 10.0, 100.0, 1e4][seed % 5]), 640)
        passed += not any("no information" in m for m in chance_warnings({"y": y, "proba": noise}))
        shuffled = np.full((640, 3), 0.1)
        shuffled[np.arange(640), r.permutation(y)] = 0.8          # confident, about other images
        passed += not any("no information" in m for m in chance_warnings({"y": y, "proba": shuffled}))
    assert passed == 0
    good = np.full((640, 3), 0.2)
    good[np.arange(640), y] = 0.6
    assert chance_warnings({"y": y, "proba": good}) == []


@pytest.fixture(scope="module")
def cache_path(masks_cache):
    return masks_cache  # conftest.py: raw + mask views, shared read-only (configs here use masks, not flip/box)


def test_cli_train_diverging_exits_nonzero_and_saves_nothing(cache_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["train", "--cache", str(cache_path), "--lr", "1e6", "--batch", "8",
                                  "--epochs", "5", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2, r.output
    assert "training diverged at epoch" in r.output and "--lr" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_select_refuses_a_chance_winner_unless_forced(cache_path, tmp_path, monkeypatch):
    monkeypatch.setattr(E, "chance_warnings", lambda oof: ["out-of-fold malignant AUC 0.500 is at chance level"])
    args = ["select", "--cache", str(cache_path), "--heads", "plain", "--only", "model-1", "--out", str(tmp_path / "s")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "at chance" in r.output and "--force" in r.output, r.output
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.json").exists()
    r = CliRunner().invoke(main, args + ["--force"])
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.stderr
    assert Model.load(tmp_path / "s").card.warnings == ["out-of-fold malignant AUC 0.500 is at chance level"]


# --------------------------------------------------------------------------- 6. torn pair
def test_torn_pair_is_refused(tmp_path):
    a_npz, a_js = tiny_model(seed=1).save(tmp_path / "a")
    b_npz, b_js = tiny_model(seed=2).save(tmp_path / "b")
    (tmp_path / "t.json").write_bytes(a_js.read_bytes())
    (tmp_path / "t.npz").write_bytes(b_npz.read_bytes())
    with pytest.raises(ModelError, match=r"weights and sidecar do not belong together \(half-written save\?.*"
                                         r"-> save again or reinstall"):
        Model.load(tmp_path / "t")
    side = json.loads(a_js.read_text())
    del side["weights_sha256"]  # a card that cannot vouch for its weights
    (tmp_path / "t.json").write_text(json.dumps(side))
    (tmp_path / "t.npz").write_bytes(a_npz.read_bytes())
    with pytest.raises(ModelError, match="weights_sha256"):
        Model.load(tmp_path / "t")


KILL_AT = """
import os, sys
sys.path.insert(0, {tests!r})
from test_faults_model import tiny_model
k, calls, real = {k}, [0], os.replace
def replace(a, b):
    calls[0] += 1
    if calls[0] == k:
        os._exit(9)                                   # killed at the k-th rename, as by kill -9
    return real(a, b)
os.replace = replace
tiny_model(seed=2).save({stem!r})
"""


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_a_kill_at_any_rename_of_a_save_leaves_the_old_or_the_new_model(tmp_path, k):
    """A save renames 4 times (temp -> NAME.npz.new, temp -> NAME.json.new, the two into place);
    a process killed at the k-th (k=5: never) leaves a model that loads: the old or the new."""
    import subprocess
    import sys
    from pathlib import Path

    stem = tmp_path / "m"
    old_npz, _ = tiny_model(seed=1).save(stem)
    old = hashlib.sha256(old_npz.read_bytes()).hexdigest()
    code = KILL_AT.format(tests=str(Path(__file__).parent), k=k, stem=str(stem))
    rc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode
    assert rc == (9 if k <= 4 else 0)
    m = Model.load(stem)                                      # never refused
    assert (m.card.weights_sha256 == old) == (k <= 3)         # committed once the 3rd rename is done
    want = tiny_model(seed=1 if k <= 3 else 2)
    assert np.array_equal(m.head.params["W2"], want.head.params["W2"])
    tiny_model(seed=3).save(stem)                             # the next save finishes or clears it
    assert Model.load(stem).card.weights_sha256 == hashlib.sha256(old_npz.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m.json", "m.npz"]


def test_a_second_writer_is_refused_and_told_which_run_holds_the_model(tmp_path):
    from busi_lite.common.atomic import LockBusy, write_lock

    stem = tmp_path / "m"
    old_npz, old_js = tiny_model(seed=1).save(stem)
    before = old_npz.read_bytes(), old_js.read_bytes()
    with write_lock(tmp_path / ".m.lock", "test"):
        with pytest.raises(LockBusy, match=r"model .*m: another busi-lite run \(pid \d+\) is writing it; "
                                           r"this run \(pid \d+\) lost and wrote nothing"):
            tiny_model(seed=2).save(stem)
    assert (old_npz.read_bytes(), old_js.read_bytes()) == before


def test_a_json_that_does_not_fit_leaves_no_lone_npz(tmp_path, monkeypatch):
    import busi_lite.model.model as mm

    stem = tmp_path / "m"
    old_npz, old_js = tiny_model(seed=1).save(stem)
    before = old_npz.read_bytes(), old_js.read_bytes()
    real = atomic_path

    def full_disk(dest, *a, **k):
        if ".json" in dest.name:
            raise BusiError(f"{dest}: disk full while writing", "free some space")
        return real(dest, *a, **k)

    monkeypatch.setattr(mm, "atomic_path", full_disk)
    with pytest.raises(BusiError, match="disk full"):
        tiny_model(seed=2).save(stem)
    assert (old_npz.read_bytes(), old_js.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m.json", "m.npz"]


def test_concurrent_resave_never_gives_a_mixed_model(tmp_path):
    stem = tmp_path / "m"
    models = [tiny_model(seed=1), tiny_model(seed=2)]
    w2 = {hashlib.sha256(m.head.params["W2"].tobytes()).hexdigest(): i for i, m in enumerate(models)}
    lowc = [0.11, 0.22]
    for m, lc in zip(models, lowc):
        m.card.calibration.low_confidence = lc
    models[0].save(stem)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        try:
            while not stop.is_set():
                models[i % 2].save(stem)
                i += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    ok = refused = 0
    t_end = time.monotonic() + 1.5
    try:
        while time.monotonic() < t_end:
            try:
                m = Model.load(stem)
            except ModelError as e:
                assert "do not belong together" in str(e) or "damaged" in str(e), str(e)
                refused += 1
                continue
            i = w2[hashlib.sha256(m.head.params["W2"].tobytes()).hexdigest()]
            assert m.card.calibration.low_confidence == lowc[i]  # weights and card from the same save
            assert np.array_equal(m.ood.mean, models[i].ood.mean)
            ok += 1
    finally:
        stop.set()
        t.join()
    assert not errors and ok > 0, (ok, refused, errors)


def test_committed_default_is_protected_by_its_hash(tmp_path):
    src = resources.packaged("model")
    side = json.loads(src.with_suffix(".json").read_text())
    assert side["weights_sha256"] == hashlib.sha256(src.with_suffix(".npz").read_bytes()).hexdigest()
    blob = bytearray(src.with_suffix(".npz").read_bytes())
    blob[-200] ^= 1  # one bit of one weight
    (tmp_path / "d.npz").write_bytes(bytes(blob))
    (tmp_path / "d.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="do not belong together"):
        Model.load(tmp_path / "d")


# --------------------------------------------------------------------------- 7. sidecar validation
def _edit(js, edit):
    d = json.loads(js.read_text())
    new = edit(d)  # dict.update/pop edit in place; a list replaces the card
    js.write_text(json.dumps(new if isinstance(new, list) else d))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(classes=["normal", "malignant"]), "n_classes 3 != 2"),
    (lambda d: d.update(classes=["normal", "benign", "malignant", "other"]), "classes must be among"),
    (lambda d: d.update(calibration=None), "calibration"),
    (lambda d: d.pop("calibration"), "calibration"),
    (lambda d: d.pop("ood"), "no 'ood'"),
    (lambda d: d.update(ood=None), "no 'ood'"),
    (lambda d: d["head"].update(n_hidden=1e12), "n_hidden"),
    (lambda d: d["head"].update(n_hidden=10 ** 12), "MB of weights, over the 256 MB limit"),
    (lambda d: d["head"].update(n_hidden=5), "has shape"),
    (lambda d: d.update(weights_sha256="xyz"), "weights_sha256"),
    (lambda d: [d], "not an object"),
])
def test_sidecar_faults_are_clear_model_errors(saved, edit, match):
    stem, _, js = saved
    _edit(js, edit)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=match):
            Model.load(stem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # nothing big was allocated (n_hidden 1e12 would be 4.7 TB)


def test_extra_large_member_is_never_decompressed(saved):
    stem, npz, js = saved
    with zipfile.ZipFile(npz, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.npy", b"\0" * (64 << 20))  # 64 MB that deflate to ~64 kB
    _reseal(npz, js)
    tracemalloc.start()
    try:
        m = Model.load(stem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.head.params["W2"].shape == (4, 3) and peak < 16 << 20
    with zipfile.ZipFile(npz, "a") as z:  # a stored (uncompressed) extra member: refused unread
        z.writestr("big.npy", b"\0" * (4 << 20))
    _reseal(npz, js)
    with pytest.raises(ModelError, match="bytes besides the model's arrays"):
        Model.load(stem)


# --------------------------------------------------------------------------- 8. sweep resume
def test_resumed_sweep_never_mixes_test_fractions(cache_path):
    cache = FeatureCache(cache_path)
    cfg = Config.build(name="model-1", epochs=3, lr=1e-3, batch=8)
    other = E.sweep(cache, [cfg], seeds=[0], test_fraction=0.3)
    assert other.results[0].test_fraction == 0.3
    kept = E.resume_runs(E.partial_json(other.results, cache), cache)
    assert len(kept) == 1  # a valid run of its own split...
    again = E.sweep(cache, [cfg], seeds=[0], done=kept)  # ...but not of this sweep's (0.15)
    assert again.results[0] is not kept[0] and again.results[0].test_fraction == 0.15
    assert again.results[0].n_test != kept[0].n_test
    forged = RunResult.from_json({**kept[0].to_json(), "test_fraction": 0.15})  # right fraction, wrong digest
    again = E.sweep(cache, [cfg], seeds=[0], done=[forged])
    assert again.results[0] is not forged
    # same path, same split, other features (the cache re-extracted from other pixels): nothing is kept
    partial = E.partial_json(other.results, cache)
    cache.content_sha256 = [c[::-1] for c in cache.content_sha256]
    msgs = []
    assert E.resume_runs(partial, cache, log=msgs.append) == [] and "other features" in msgs[0]
    assert E.resume_runs({k: v for k, v in partial.items() if k != "cache_digest"}, cache) == []


# --------------------------------------------------------------------------- issue 10: select
def _row(name, recall, auc, masks=False, head="plain"):
    cfg = Config.build(name=name, masks=masks, head=head)
    return SelectionRow(name=name, config=cfg, oof_recall_at_far=recall, oof_auc=auc, oof_accuracy=0.7,
                        far_cap=0.1, seconds=1.0), cfg


def test_selection_ties_go_to_the_simpler_model():
    rows, cfgs = zip(_row("model-7p", 0.769, 0.90, masks=True), _row("model-7", 0.765, 0.88),
                     _row("model-7+mtl", 0.769, 0.95, head="mtl"), _row("model-2", 0.70, 0.99))
    configs = {c.name: c for c in cfgs}
    ranking, tied = E.rank(list(rows), configs, 3)
    assert tied == ["model-7", "model-7p", "model-7+mtl"]  # within 0.01: fewer params, then no masks
    assert [r.name for r in ranking] == ["model-7", "model-7p", "model-7+mtl", "model-2"]
    ranking, tied = E.rank(list(rows), configs, 3, margin=0.0)  # exact ties only: masks lose to no-mtl
    assert tied == ["model-7p", "model-7+mtl"] and ranking[-2].name == "model-7"
    res = SelectionResult(criterion="c", seed=0, ranking=ranking, margin=0.01, tied=tied)
    back = SelectionResult.from_json(json.loads(json.dumps(res.to_json())))
    assert back.margin == 0.01 and back.tied == tied and back.winner.name == "model-7p"


def test_select_records_margin_and_tie(cache_path):
    res = E.select(FeatureCache(cache_path), [Config.build(name="a", epochs=3, lr=1e-3, batch=8),
                                              Config.build(name="b", epochs=3, lr=1e-3, batch=8, masks=True)],
                   folds=2)
    assert res.margin == E.SELECTION_MARGIN and res.tied[0] == res.winner.name
    assert all(r.n_params == 1280 * 100 + 100 + 100 * 3 for r in res.ranking)
    if len(res.tied) == 2:
        assert res.winner.name == "a"  # same recall within the margin: no masks wins


def test_train_and_select_never_overwrite_the_shipped_model_by_default(cache_path, tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"  # stands in for the installed package's weights folder
    pkg.mkdir()
    monkeypatch.setattr(resources, "packaged_dir", lambda: pkg)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    base = ["train", "--cache", str(cache_path), "--epochs", "3", "--lr", "1e-3", "--batch", "8", "--name", "m"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 0, r.output
    assert (work / "models" / "m.npz").is_file() and list(pkg.iterdir()) == []
    r = CliRunner().invoke(main, base + ["--out", str(pkg / "busi_lite_default")])
    assert r.exit_code == 2 and "--force" in r.output and list(pkg.iterdir()) == []
    r = CliRunner().invoke(main, ["select", "--cache", str(cache_path), "--out", str(pkg / "busi_lite_default")])
    assert r.exit_code == 2 and "--force" in r.output and list(pkg.iterdir()) == []
    r = CliRunner().invoke(main, base + ["--out", str(pkg / "busi_lite_default"), "--force"])
    assert r.exit_code == 0 and (pkg / "busi_lite_default.npz").is_file()


def test_ood_statistics_of_too_few_images_are_a_card_warning():
    from busi_lite.training.core import ood_warning

    rng = np.random.default_rng(0)
    assert ood_warning(OOD.fit(rng.normal(size=(100, D))), 100) is None
    w = ood_warning(OOD.fit(rng.normal(size=(14, D))), 14)
    assert w and "14 training images" in w and "unreliable" in w
    flat = np.repeat(rng.normal(size=(1, D)), 60, axis=0)
    flat[:30] += 1.0                                   # one direction of variance, every other scale at the floor
    w = ood_warning(OOD.fit(flat), 60)
    assert w and "scales at the 2e-06 floor" in w
