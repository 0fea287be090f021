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
    n = json.loads(r.stdout)["extracted"]
    # stderr is not a terminal here: progress comes as lines (a first one and a last one at least)
    assert f"extracting: 0/{n} images (0 %)" in r.stderr and f"extracting: {n}/{n} images (100 %)" in r.stderr
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.lock"))   # a finished extract leaves no lock
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


def test_progress_lines_every_few_seconds():
    import io

    from busi_lite.common.progress import LineProgress

    t = [0.0]
    out = io.StringIO()
    p = LineProgress(100, "extracting", stream=out, every=5.0, clock=lambda: t[0])
    for _ in range(10):            # 10 updates of 10 images, 2 s apart: a line at 6 s, 12 s, 18 s (every >= 5 s)
        t[0] += 2.0
        p.update(10)
    p.render_finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == "extracting: 0/100 images (0 %), 0:00 elapsed, ETA ?"
    assert lines[1] == "extracting: 30/100 images (30 %), 0:06 elapsed, ETA 0:14"
    assert len(lines) == 1 + 3 + 1 and lines[-1] == "extracting: 100/100 images (100 %), 0:20 elapsed, ETA 0:00"


def test_data_check_on_a_wrong_folder_fails_before_any_statistics(tmp_path):
    (tmp_path / "not_busi" / "photos").mkdir(parents=True)
    r = CliRunner().invoke(main, ["data", "check", str(tmp_path / "not_busi")])
    assert r.exit_code == 1 and "no class folder" in r.stderr and " -> " in r.stderr
    assert r.stdout == ""      # no zero-filled counts, sizes or duplicate groups first


def test_unreadable_files_are_named_not_their_handles(tmp_path):
    import pytest

    from busi_lite.common.errors import ImageError
    from busi_lite.io.imread import read_gray, read_rgb

    bad = tmp_path / "x_mask.png"
    bad.write_bytes(b"not a png at all" * 8)
    for read in (read_gray, read_rgb):
        with pytest.raises(ImageError) as e:
            read(bad)
        assert str(bad) in str(e.value) and "_io." not in str(e.value) and "name=" not in str(e.value)
