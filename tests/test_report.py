"""busi-lite report: HTML + Markdown report with the paper's figures and tables (synthetic data)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")
from click.testing import CliRunner  # noqa: E402
from synth import make_busi_tree, make_tiny_onnx  # noqa: E402

from busi_lite.cli import main
from busi_lite.cli.commands import train_command
from busi_lite.common.jsonio import write as write_json
from busi_lite.features import cache as F
from busi_lite.features.views import VIEWS
from busi_lite.model.config import Config, paper_grid
from busi_lite.report.inputs import ModelInput, ReportError, ReportInputs
from busi_lite.report.render import build_report
from busi_lite.report.stats import paper_figures, paper_name, sweep_table, write_sweep_csv
from busi_lite.report.tables import selection_table
from busi_lite.training import experiments as E

PNG = "data:image/png;base64,"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tiny tree -> cache -> an mtl and a plain model, a 2-config x 2-seed x 2-fraction sweep, flags JSON."""
    t = tmp_path_factory.mktemp("report_inputs")
    bb = make_tiny_onnx(t / "bb.onnx", seed=0)
    make_busi_tree(t / "busi", seed=0)
    F.extract(t / "busi", t / "cache.h5", backbone=bb, views=VIEWS)  # mask-fused views: the sweep's masks=True
    fc = F.FeatureCache(t / "cache.h5")
    out = {"dir": t, "cache": t / "cache.h5"}
    for head in ("mtl", "plain"):
        model, _ = E.fit_model(fc, Config.build(name=f"model-7-{head}", epochs=5, head=head), seed=0)
        model.save(t / f"m_{head}")
        out[head] = t / f"m_{head}"
    configs = [Config.build(name="model-7", base="model-7", epochs=3),
               Config.build(name="model-7pp", base="model-7pp", epochs=3, masks=True, balance="undersample")]
    sw = E.sweep(fc, configs, [0, 1], [1.0, 0.5])
    write_json(t / "sweep.json", sw)
    out["sweep"] = t / "sweep.json"
    out["flags"] = t / "flags.json"
    out["flags"].write_text(_flags_json(out["mtl"], out["cache"]))
    return out


def _flags_json(model, cache) -> str:
    """`busi-lite evaluate --json` output for the synthetic model."""
    r = CliRunner().invoke(main, ["evaluate", "--model", str(model), "--cache", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    return r.stdout


def _run(args):
    return CliRunner().invoke(main, ["report"] + [str(a) for a in args], catch_exceptions=False)


def test_full_report(inputs, tmp_path):
    out = tmp_path / "rep"
    r = _run(["--model", inputs["mtl"], "--model", inputs["plain"], "--sweep", inputs["sweep"],
              "--cache", inputs["cache"], "--flags-json", inputs["flags"], "--out", out])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    # Fig 1, Fig 2, Fig 3 per model (2) + sweep (1), ROC, dataset size, lesion maps of the mtl model
    assert pngs == sorted(["fig1_accuracy.png", "fig2_loss.png", "fig3_confusion_m_mtl.png",
                           "fig3_confusion_m_plain.png", "fig3_confusion_sweep_sweep.png", "fig4_roc.png",
                           "fig5_fraction_sweep.png", "fig6_lesions_m_mtl.png"])
    assert html.count(PNG) == len(pngs)
    for p in out.glob("*.png"):  # each figure is a real, non-blank picture, embedded byte for byte
        with Image.open(p) as im:
            assert im.width > 300 and im.height > 200
            assert np.asarray(im.convert("L")).std() > 5
        assert base64.b64encode(p.read_bytes()).decode() in html
    for doc in (html, md):
        for s in ("Table 1", "Table 2", "malignant accuracy (paper)", "recall % (paper)", "FAR % (paper)",
                  "MAR % (ours)", "precision % (paper)", "Dataset-size sensitivity", "Dice", "IoU",
                  "Safety flags' evidence", "low_confidence", "ANY FLAG", "Reproduce", "busi-lite report --model"):
            assert s in doc, s
        # the paper's figures (experiments.PAPER): model-7pp 0.93 / 95.6 % / 3.4 %; model-7 84.4 %, MAR 15.6 %
        for s in ("0.93", "95.6", "3.4", "84.4", "15.6"):
            assert re.search(rf"\b{re.escape(s)}\b", doc), s
        # digests of the inputs in the footer
        assert hashlib.sha256(inputs["cache"].read_bytes()).hexdigest() in doc
        assert hashlib.sha256(inputs["sweep"].read_bytes()).hexdigest() in doc
        assert "busi-lite extract --data" in doc and "busi-lite sweep --cache" in doc
    assert PNG not in md
    for p in pngs:
        assert f"]({p})" in md
    assert "<table>" in html and "<caption>Table 1" in html
    assert "wrote" in r.output and "8 figures" in r.output


def test_sweep_only_and_curves_option(inputs, tmp_path):
    out = tmp_path / "rep"
    r = _run(["--sweep", inputs["sweep"], "--curves", "model-7", "--out", out])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert html.count(PNG) == 4  # Fig 1, Fig 2, Fig 3 (sweep), dataset size; no ROC / lesion maps
    assert not list(out.glob("fig4_*")) and not list(out.glob("fig6_*"))
    assert "--curves model-7" in html
    r = _run(["--sweep", inputs["sweep"], "--curves", "model-99", "--out", tmp_path / "bad"])
    assert r.exit_code == 2 and "model-99" in r.output and "model-7pp" in r.output


def test_mtl_without_cache_explains(inputs, tmp_path, monkeypatch):
    monkeypatch.delenv("BUSI_LITE_CACHE", raising=False)
    out = tmp_path / "rep"
    r = _run(["--model", inputs["mtl"], "--out", out])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "no feature cache given" in md and not list(out.glob("fig6_*"))
    assert (out / "report.html").read_text().count(PNG) == 4  # Fig 1, Fig 2, Fig 3, ROC


def test_missing_images_fall_back(inputs, tmp_path):
    fc = F.FeatureCache(inputs["cache"])
    fc.attrs["dataset_root"] = str(tmp_path / "nowhere")
    res = build_report(ReportInputs(tmp_path / "rep", models=[inputs["mtl"]], cache=fc))
    assert any(p.name == "fig6_lesions_m_mtl.png" for p in res["figures"])
    assert "not found under" in res["markdown"].read_text()


def test_bad_inputs(inputs, tmp_path):
    r = _run(["--out", tmp_path / "x"])
    assert r.exit_code == 2 and "--model" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    r = _run(["--flags-json", bad, "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "busi-lite evaluate" in r.output
    r = _run(["--sweep", bad, "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "not a sweep result" in r.output
    r = _run(["--model", tmp_path / "nothing", "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "not found" in r.output
    # another schema version fails at load, naming the file, before any figure is drawn
    sw = json.loads(inputs["sweep"].read_text())
    bad.write_text(json.dumps(dict(sw, schema="sweep/99")))
    r = _run(["--sweep", bad, "--out", tmp_path / "y"])
    assert r.exit_code == 2 and "sweep/99" in r.output and str(bad) in r.output and not (tmp_path / "y").exists()
    ev = json.loads(inputs["flags"].read_text())
    bad.write_text(json.dumps(dict(ev, version=99)))
    r = _run(["--flags-json", bad, "--out", tmp_path / "y"])
    assert r.exit_code == 2 and "version 99" in r.output and not (tmp_path / "y").exists()


def test_flags_only(inputs, tmp_path):
    r = _run(["--flags-json", inputs["flags"], "--out", tmp_path / "rep"])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ANY FLAG" in md and "error share / image share" in md


def test_matplotlib_missing_is_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ReportError, match=r"busi-lite\[report\]"):
        from busi_lite.report.figures import pyplot

        pyplot()


def test_paper_name_and_figures():
    assert paper_name({"name": "custom", "lr": 1e-4, "batch": 32, "epochs": 50, "masks": False,
                         "balance": "none"}) == "model-7"
    assert paper_name({"name": "model-7pp+mtl"}) == "model-7pp"
    assert paper_name({"name": "x", "lr": 0.3, "batch": 1, "epochs": 1}) is None
    p = paper_figures("model-7pp")
    assert p["malignant_recall"] == pytest.approx(0.956) and p["malignant_mar"] == pytest.approx(0.044)


def test_sweep_table_and_csv_still_work(inputs, tmp_path):
    summary = json.loads(inputs["sweep"].read_text())["summary"]
    text = sweep_table(summary)
    assert "model-7pp" in text and "(0.956)" in text
    write_sweep_csv(summary, tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4 and {r["fraction"] for r in rows} == {"1.0", "0.5"}
    assert rows[0]["paper_malignant_recall"] != ""
    # config columns come from the declarations: the recipe's fields and the plain head's parameters
    assert {"head", "masks", "balance", "views", "preprocess", "flip", "lr", "batch", "epochs", "hidden"} <= set(rows[0])
    assert rows[0]["views"] == "roi,masked,mask" and rows[0]["hidden"] == "100"


def test_selected_model_table_and_command(tmp_path):
    from pathlib import Path

    meta = {"config": {}, "split": {"seed": 0}, "selection": {
        "criterion": "5-fold OOF malignant recall at FAR <= 0.1 on the training split", "seed": 0,
        "ranking": [{"name": "model-7p+mtl", "oof_recall_at_far": 0.8, "oof_auc": 0.9, "oof_accuracy": 0.8,
                     "config": {"name": "model-7p+mtl", "head": "mtl"}},  # the flat layout of older cards
                    {"name": "model-7", "oof_recall_at_far": 0.7, "oof_auc": 0.9, "oof_accuracy": 0.8,
                     "config": paper_grid("plain")[7].to_json()}]}}
    mi = ModelInput("x", Path("w/x"), meta)
    t = selection_table(mi)
    assert t.rows[0][0] == "model-7p+mtl" and "FAR <= 0.1" in t.md()
    assert train_command(mi.meta, mi.path, "c.h5") == ("busi-lite select --cache c.h5 --heads mtl,plain --only model-7,model-7p "
                                           "--far-cap 0.1 --seed 0 --out w/x")


def test_flags_fixture_is_real_evaluate_output(inputs):
    res = json.loads(inputs["flags"].read_text())
    assert set(res["flags"]) >= {"low_confidence", "mismatch", "unusual_input"}
    assert res["n"] > 0 and "any_flag" in res


def test_sweep_table_clips_intervals_to_rates():
    row = {"name": "model-7", "fraction": 1.0, "paper": {}, "train_seconds": {"mean": 1.0, "lo": 0.5, "hi": 1.5},
           "dice": {"mean": None, "lo": None, "hi": None}}
    for k in ("malignant_recall", "malignant_far", "malignant_precision", "malignant_auc"):
        row[k] = {"mean": 0.5, "lo": 0.4, "hi": 0.6}
    row["accuracy"] = {"mean": 0.794, "lo": 0.55, "hi": 1.03}
    row["malignant_far"] = {"mean": 0.02, "lo": -0.03, "hi": 0.07}
    text = sweep_table([row])
    assert "0.794 [0.55,1.00]" in text and "0.020 [0.00,0.07]" in text and "1.03" not in text


def test_same_runs_in_two_sweeps_shown_once(inputs, tmp_path):
    """A fraction study repeating the plain sweep's runs adds no duplicate Table 1 rows or Fig. 1-3 panels."""
    again = tmp_path / "sweep_b.json"
    shutil.copyfile(inputs["sweep"], again)
    out = tmp_path / "rep"
    r = _run(["--sweep", inputs["sweep"], "--sweep", again, "--out", out])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    table1 = md.split("**Table 1")[1].split("**Table 2")[0]
    rows = [ln for ln in table1.splitlines() if ln.startswith("| model-")]
    assert sorted(ln.split("|")[1].strip() for ln in rows) == ["model-7", "model-7pp"]
    assert all("(= sweep_b)" in ln for ln in rows)
    assert not (out / "fig3_confusion_sweep_sweep_b.png").exists()
    assert (out / "fig3_confusion_sweep_sweep.png").exists()


def test_selection_table_shows_scores_not_dicts():
    from pathlib import Path

    meta = {"selection": {"criterion": "c", "seed": 0, "ranking": [
        {"name": "model-7", "config": {"lr": 1e-4, "batch": 32}, "oof_recall_at_far": 0.8, "oof_auc": 0.91,
         "oof_accuracy": 0.77, "far_cap": 0.1, "seconds": 12.5}]}}
    t = selection_table(ModelInput("x", Path("w/x"), meta))
    assert t.header[0] == "config" and "OOF AUC" in t.header
    assert not any("{" in str(c) for c in t.rows[0]) and "0.910" in t.rows[0]
