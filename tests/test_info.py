"""busi_lite.serving.info (never raises; finds what the commands find) and busi_lite.common.threads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from busi_lite.common import resources as R
from busi_lite.common import threads as T
from busi_lite.common.errors import ConfigError
from busi_lite.common.jsonio import dumps
from busi_lite.serving import info as I

SHA = "d75e5fd95a8aa3807fafc7d4a91f2ccea91bce75e19e4c5acae256468778294a"


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    for k in R.ENV.values():
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)


def test_collect_finds_the_packaged_pair(no_env):
    info = I.collect()
    assert info.backbone.source == "packaged" and info.model.source == "packaged"
    assert info.backbone.sha256 == SHA and info.backbone.loads is True and info.model.loads is True
    assert info.model.details["backbone_sha256"] == SHA
    assert info.agree is True and info.errors == []
    assert info.versions["numpy"] == np.__version__ and "onnxruntime" in info.versions
    assert info.onnxruntime_threads >= 1 and info.blas_threads_used == T.DEFAULT_BLAS_THREADS
    text = I.render(info)
    for s in (SHA, "packaged", "agree: yes", "onnxruntime intra-op threads", "busi-lite limits it to 1"):
        assert s in text
    back = json.loads(I.render(info, as_json=True))
    assert back["backbone"]["sha256"] == SHA and json.loads(dumps(info))["agree"] is True


def test_collect_reports_problems_instead_of_raising(no_env, tmp_path, monkeypatch):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    monkeypatch.setenv(R.ENV["model"], str(tmp_path / "missing"))
    info = I.collect(backbone=broken)
    assert info.backbone.source == "option" and info.backbone.loads is False and "onnxruntime" in info.backbone.error
    assert info.model.source == "environment" and info.model.loads is False and "missing.npz" in info.model.error
    assert info.agree is None and len(info.errors) == 2
    assert "DOES NOT LOAD" in I.render(info) and "problems:" in I.render(info)


def test_collect_detects_a_backbone_the_model_was_not_trained_on(no_env, tmp_path, monkeypatch):
    other = tmp_path / "other.onnx"
    other.write_bytes(R.packaged("backbone").read_bytes() + b"\0")  # another file, other SHA-256
    monkeypatch.setattr("busi_lite.features.backbone.Backbone", lambda path: (_ for _ in ()).throw(RuntimeError("boom")))
    info = I.collect(backbone=other)
    assert info.backbone.loads is False and "RuntimeError: boom" in info.backbone.error
    assert info.agree is False and "NO" in info.agreement
    assert any("backbone/model" in e for e in info.errors)


def test_collect_survives_a_broken_library(no_env, monkeypatch):
    real = I.importlib.metadata.version

    def fake(name):
        if name == "pydicom":
            raise RuntimeError("broken metadata")
        return real(name)

    monkeypatch.setattr(I.importlib.metadata, "version", fake)
    assert I.collect().versions["pydicom"] is None


# ---------------------------------------------------------------- threads
def test_limit_blas_sets_and_restores():
    pools = T.blas_pools()
    if not pools:
        pytest.skip("no BLAS library visible to threadpoolctl")
    before = [p.threads for p in pools]
    with T.limit_blas():
        assert all(p.threads == 1 for p in T.blas_pools())
    assert [p.threads for p in T.blas_pools()] == before
    limiter = T.limit_blas(1)
    try:
        assert all(p.threads == 1 for p in T.blas_pools())
    finally:
        limiter.restore_original_limits()
    assert [p.threads for p in T.blas_pools()] == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_limit_blas_rejects_bad_counts(bad):
    with pytest.raises(ConfigError) as e:
        T.limit_blas(bad)
    assert e.value.param == "blas_threads"
