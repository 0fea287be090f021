"""The shipped backbone and default model are found next to the installed package,
never in the current directory; option > environment variable > packaged.

The full install check (wheel -> fresh venv -> `busi-lite predict` from a temp dir)
is in .ci/run; these tests are the fast part of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import busi_lite
from busi_lite.common import resources as R
from busi_lite.common.errors import ConfigError, ModelError
from busi_lite.features import backbone as B
from busi_lite.model import model as M

BACKBONE_SHA256 = "d75e5fd95a8aa3807fafc7d4a91f2ccea91bce75e19e4c5acae256468778294a"
CHECKOUT = Path(__file__).resolve().parents[1]


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("BUSI_LITE_")}


def test_packaged_files_resolve_from_any_cwd(tmp_path):
    """In a fresh interpreter, in an empty cwd with no BUSI_LITE_* set, both defaults come
    from the package's weights folder, and both load."""
    code = (
        "import json; from busi_lite.common import resources as R; from busi_lite.features import backbone as B; from busi_lite.model import model as M\n"
        "b, m = R.resolve('backbone'), R.resolve('model')\n"
        "M.Model.load()\n"
        "print(json.dumps({'dir': str(R.packaged_dir()), 'backbone': b.to_dict(), 'model': m.to_dict(),\n"
        "                  'resolve_path': str(B.resolve_path())}))\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=_clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    pkg_dir = Path(out["dir"])
    # a wheel install: <site-packages>/busi_lite/weights; editable or source: <checkout>/weights
    assert pkg_dir in (Path(busi_lite.__file__).resolve().parent / "weights", CHECKOUT / "weights")
    assert tmp_path not in pkg_dir.parents and pkg_dir != tmp_path
    assert out["backbone"] == {"path": str(pkg_dir / "mobilenet_v2_035_224.onnx"), "source": "packaged"}
    assert out["model"] == {"path": str(pkg_dir / "busi_lite_default"), "source": "packaged"}
    assert out["resolve_path"] == out["backbone"]["path"]


def test_shipped_backbone_is_the_documented_file_and_matches_the_model():
    path = R.packaged("backbone")
    assert path.is_file() and path.stat().st_size == 1_597_491
    assert _sha256(path) == BACKBONE_SHA256
    meta = json.loads(R.packaged("model").with_suffix(".json").read_text())
    assert meta["backbone_sha256"] == BACKBONE_SHA256
    assert (R.packaged_dir() / "NOTICE").is_file() and (R.packaged_dir() / "LICENSE-Apache-2.0.txt").is_file()


def test_precedence_option_then_environment_then_packaged(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for kind in R.KINDS:
        monkeypatch.delenv(R.ENV[kind], raising=False)
        assert R.resolve(kind) == R.Resolved(R.packaged(kind), "packaged")
        monkeypatch.setenv(R.ENV[kind], "")  # empty counts as unset
        assert R.resolve(kind).source == "packaged"
        monkeypatch.setenv(R.ENV[kind], str(tmp_path / "env.x"))
        assert R.resolve(kind) == R.Resolved(tmp_path / "env.x", "environment")
        assert R.resolve(kind, tmp_path / "opt.x") == R.Resolved(tmp_path / "opt.x", "option")
        assert R.resolve(kind, str(tmp_path / "opt.x")).source == "option"
        assert R.resolve(kind, "").source == "environment"


def test_loaders_follow_the_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(R.ENV["model"], str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="nowhere.npz"):
        M.Model.load()
    monkeypatch.delenv(R.ENV["model"])
    assert M.Model.load().card.backbone_sha256 == BACKBONE_SHA256
    monkeypatch.setenv(R.ENV["backbone"], str(tmp_path / "env.onnx"))
    with pytest.raises(B.BackboneError, match=r"env\.onnx \(from \$BUSI_LITE_BACKBONE\)"):
        B.resolve_path()
    with pytest.raises(B.BackboneError, match=r"opt\.onnx \(from the backbone given\)"):
        B.resolve_path(tmp_path / "opt.onnx")


def test_missing_packaged_backbone_says_install_is_broken(monkeypatch, tmp_path):
    monkeypatch.delenv(R.ENV["backbone"], raising=False)
    monkeypatch.setattr(R, "packaged_dir", lambda: tmp_path)
    with pytest.raises(B.BackboneError, match="packaged .* is missing .*reinstall"):
        B.resolve_path()


def test_env_names_agree_with_the_loaders():
    assert R.ENV["backbone"] == B.ENV_BACKBONE and R.ENV["model"] == M.ENV_MODEL
    assert R.PACKAGED_NAME["backbone"] == B.DEFAULT_BACKBONE and R.PACKAGED_NAME["model"] == M.DEFAULT_MODEL


def test_unknown_kind_names_the_parameter():
    with pytest.raises(ConfigError) as e:
        R.resolve("weights")
    assert e.value.param == "kind" and "backbone" in str(e.value)


def test_pyproject_ships_every_packaged_file():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {"busi_lite.weights": "weights"}
    shipped = set(cfg["package-data"]["busi_lite.weights"])
    assert {"mobilenet_v2_035_224.onnx", "busi_lite_default.npz", "busi_lite_default.json",
            "NOTICE", "LICENSE-Apache-2.0.txt"} <= shipped
    for name in shipped:
        assert (CHECKOUT / "weights" / name).is_file(), name
