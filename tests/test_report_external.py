"""busi-lite report --external: the "Another hospital" section from `busi-lite evaluate --data DIR --json`
(synthetic data), and the lesion-map note when no multi-task model is given."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("matplotlib")
from click.testing import CliRunner  # noqa: E402
from synth import make_busi_tree  # noqa: E402

from busi_lite.cli import main
from busi_lite.features.cache import FeatureCache, extract
from busi_lite.model.config import Config
from busi_lite.training.experiments import fit_model

PNG = "data:image/png;base64,"


def _quiet(_msg):
    pass


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """A tiny plain model trained on a BUSI-like tree (conftest.tiny_world's tree and cache, read-only);
    a two-class 'other site' folder evaluated with and without per-image rows (real `busi-lite evaluate
    --data` output)."""
    base = tmp_path_factory.mktemp("report_external")
    tiny_backbone = tiny_world["backbone"]
    with FeatureCache(tiny_world["cache"]) as fc:
        model, _ = fit_model(fc, Config.build(name="tiny", epochs=20, head="plain", hidden=16, lr=1e-3, batch=8), seed=0)
    model.save(base / "tiny")
    site = base / "clinic"
    make_busi_tree(site, n_per_class=(0, 10, 8), seed=3, extras=False)
    shutil.rmtree(site / "normal", ignore_errors=True)
    extract(site, base / "clinic.h5", tiny_backbone, views=(), log=_quiet, progress=False)
    out = {"base": base, "model": base / "tiny", "cache": tiny_world["cache"], "root": tiny_world["root"]}
    for tag, extra in (("ext", ["--per-image"]), ("ext_plain", [])):
        r = CliRunner().invoke(main, ["evaluate", "--model", str(base / "tiny"), "--data", str(site), "--cache",
                                      str(base / "clinic.h5"), "--json"] + extra)
        assert r.exit_code == 0, r.output
        (base / f"{tag}.json").write_text(r.stdout)
        out[tag] = base / f"{tag}.json"
    return out


def _run(args):
    return CliRunner().invoke(main, ["report"] + [str(a) for a in args], catch_exceptions=False)


def test_external_section(world, tmp_path):
    out = tmp_path / "rep"
    ev = json.loads(world["ext"].read_text())
    r = _run(["--model", world["model"], "--external", world["ext"], "--out", out])
    assert r.exit_code == 0, r.output
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert (out / "fig7_roc_external_clinic.png").is_file()
    for doc in (md, html):
        assert "Another hospital: clinic" in doc
        assert "benign 10, malignant 8" in doc and "18 images" in doc
        assert f"AUC {ev['auc']:.3f} [{ev['auc_lo']:.3f}, {ev['auc_hi']:.3f}]" in doc
        rec = ev["argmax"]["recall"]  # Wilson interval with k/n
        assert f"{rec['value']:.3f} [{rec['lo']:.3f}, {rec['hi']:.3f}] ({rec['k']}/{rec['n']})" in doc
        ge = ">=" if doc is md else "&gt;="
        assert f"operating point p(malignant) {ge} {ev['operating_point']['threshold']:.4f}" in doc
        assert "predicted normal" in doc and "ANY FLAG" in doc and "all 18 images of clinic" in doc
        # the command that produced the evaluation, rebuilt with the given model, and the report's own
        assert f"busi-lite evaluate --model {world['model']} --data" in doc
        assert f"{'>' if doc is md else '&gt;'} {world['ext']}" in doc
        assert f"--external {world['ext']}" in doc
    # confusion: folder classes (rows) x model classes (columns), counts as recorded
    table = md.split("**Confusion matrix on clinic")[1].split("**", 1)[1].split("\n\n")[1]
    for cname, row in zip(ev["dataset_classes"], ev["confusion"]):
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {cname} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[1]) == sum(row) and [int(c.split()[0]) for c in cells[2:]] == row
    assert html.count(PNG) == len(list(out.glob("*.png")))


def test_external_without_per_image_says_so(world, tmp_path):
    out = tmp_path / "rep"
    r = _run(["--external", world["ext_plain"], "--out", out])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "no per-image probabilities, so no ROC curve" in md and not list(out.glob("fig7_*"))
    assert "Another hospital" in md and "MODEL_tiny" in md  # model not given: named, not guessed


def test_external_schema_checked_at_load(world, tmp_path):
    bad = tmp_path / "bad.json"
    ev = json.loads(world["ext"].read_text())
    bad.write_text(json.dumps(dict(ev, schema="external_evaluation/99")))
    r = _run(["--external", bad, "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "external_evaluation/99" in r.output and str(bad) in r.output
    assert not (tmp_path / "x").exists()
    del ev["confusion"]
    bad.write_text(json.dumps(ev))
    r = _run(["--external", bad, "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "confusion" in r.output and not (tmp_path / "x").exists()
    r = _run(["--external", world["ext"].with_name("nothing.json"), "--out", tmp_path / "x"])
    assert r.exit_code == 2
    bad.write_text(json.dumps({"hello": 1}))  # e.g. flags JSON of the plain evaluate
    r = _run(["--external", bad, "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "not an external evaluation" in r.output and "--data" in r.output


def test_no_lesion_map_model_is_said(world, tmp_path):
    out = tmp_path / "rep"
    r = _run(["--model", world["model"], "--cache", world["cache"], "--out", out])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "no model with a lesion map" in md and "--head mtl" in md and not list(out.glob("fig6_*"))


def test_rebuilt_commands_parse_with_the_real_cli(world, monkeypatch):
    """The evaluate and report commands written into the report are accepted by the click group as written."""
    import shlex
    from pathlib import Path

    import click

    from busi_lite.cli.commands import external_evaluate_command, report_external_command

    def parse(command):
        args = shlex.split(command.split(" > ")[0])
        ctx = click.Context(main)
        return main.get_command(ctx, args[1]).make_context(args[1], args[2:], parent=ctx).params

    cmd = external_evaluate_command(world["model"], world["root"], "c.h5", "ext one.json")
    p = parse(cmd)
    assert cmd.endswith("> 'ext one.json'") and p["model"] == world["model"] and p["data_dir"] == world["root"]
    assert p["as_json"] and p["per_image"] and p["cache"] == Path("c.h5")
    p = parse(external_evaluate_command(None, world["root"], None, "e.json", per_image=False))
    assert p["model"] is None and not p["per_image"]
    p = parse(report_external_command([world["ext"], world["ext_plain"]], models=[world["model"]], out="rep"))
    assert p["externals"] == (world["ext"], world["ext_plain"]) and p["models"] == (world["model"],)
