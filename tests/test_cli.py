"""The data check and extract commands: exit codes, JSON, contact sheet, clear errors."""

import json

from click.testing import CliRunner
from PIL import Image

from busi_lite.cli import main


def test_data_check_ok_json_and_sheet(busi_tree, tmp_path):
    root, info = busi_tree
    r = CliRunner().invoke(main, ["data", "check", str(root), "--json", "--sheet", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    inv = json.loads(r.stdout)
    assert inv["counts"] == {c: info["counts"][c] for c in ("normal", "benign", "malignant")}
    assert sorted(info["cross_label_duplicate"]) in [sorted(g) for g in inv["mixed_label_groups"]]
    sheet = Image.open(tmp_path / "s.png")
    assert sheet.height > 128 * len(inv["duplicate_groups"])  # one row per group


def test_data_check_errors_exit_nonzero(busi_tree):
    root, _ = busi_tree
    (root / "benign" / "benign (2).png").write_bytes(b"not a png")
    (root / "benign" / "notes.txt").write_text("hello")
    r = CliRunner().invoke(main, ["data", "check", str(root)])
    assert r.exit_code == 0  # skippable problems are warnings...
    assert "benign/benign (2).png" in r.output and "notes.txt" in r.output
    r = CliRunner().invoke(main, ["data", "check", str(root), "--strict"])
    assert r.exit_code == 1  # ...and errors with --strict
    for f in (root / "normal").iterdir():
        f.unlink()
    r = CliRunner().invoke(main, ["data", "check", str(root)])
    assert r.exit_code == 0 and "note: normal/" in r.output  # any subset of the classes...
    r = CliRunner().invoke(main, ["data", "check", str(root), "--classes", "normal,benign,malignant"])
    assert r.exit_code == 1 and "no images" in r.output     # ...unless they are named


def test_extract_command_and_clear_errors(busi_tree, tiny_backbone, tmp_path):
    root, _ = busi_tree
    out = tmp_path / "c.h5"
    r = CliRunner().invoke(main, ["extract", "--data", str(root), "--backbone", str(tiny_backbone),
                                  "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["extracted"] == sum(1 for _ in root.glob("*/*).png"))
    r = CliRunner().invoke(main, ["extract", "--data", str(root), "--backbone", str(tmp_path / "none.onnx"),
                                  "--out", str(out)])
    assert r.exit_code == 2 and "none.onnx" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["extract", "--data", str(tmp_path / "nodata"), "--backbone", str(tiny_backbone),
                                  "--out", str(out)])
    assert r.exit_code == 2 and "BUSI_LITE_DATA" in r.output


def test_info_command_reports_model_and_backbone(tmp_path):
    r = CliRunner().invoke(main, ["info", "--json", "--model", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    facts = json.loads(r.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert facts["busi_lite"] and "backbone" in facts and "model" in facts
    assert str(tmp_path / "none") in json.dumps(facts["model"])  # the model we named, reported as not loading
