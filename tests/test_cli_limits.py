"""CLI boundaries: CSV cells a spreadsheet would run, bad numbers refused cleanly, full disks."""

from __future__ import annotations

from busi_lite.common.csvcell import safe_cell


def test_safe_cell_follows_owasp():
    assert [safe_cell(v) for v in ("=1+2", "+x", "-cmd", "@SUM(A1)", "\tx", "\rx")] == \
        ["'=1+2", "'+x", "'-cmd", "'@SUM(A1)", "'\tx", "'\rx"]
    assert [safe_cell(v) for v in ("-0.5", "+3", "a=b", "", 7, None)] == ["-0.5", "+3", "a=b", "", 7, None]


def test_a_batch_larger_than_the_data_is_one_batch_not_a_huge_buffer():
    import numpy as np

    from busi_lite.heads import PlainHead, fit

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 1280)).astype(np.float32), np.repeat([0, 1, 2, 0], 10)
    a = fit(PlainHead(1280, 8, 3, seed=0), X, y, lr=1e-3, batch_size=10 ** 8, epochs=2, seed=0)
    b = fit(PlainHead(1280, 8, 3, seed=0), X, y, lr=1e-3, batch_size=40, epochs=2, seed=0)
    assert a["train_loss"] == b["train_loss"]


def test_repeated_fractions_are_refused_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from busi_lite.cli import main

    r = CliRunner().invoke(main, ["sweep", "--fractions", "1,1", "--cache", str(tmp_path / "none.h5"),
                                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "repeats a fraction" in r.output + r.stderr


def test_extract_without_out_never_replaces_another_datasets_cache(tmp_path, monkeypatch, tiny_backbone):
    from click.testing import CliRunner
    from synth import make_busi_tree

    from busi_lite.cli import main

    make_busi_tree(tmp_path / "a", n_per_class=(2, 2, 2), seed=1)
    make_busi_tree(tmp_path / "b", n_per_class=(2, 2, 2), seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUSI_LITE_CACHE", raising=False)
    run = ["extract", "--views", "", "--backbone", str(tiny_backbone)]
    assert CliRunner().invoke(main, [*run, "--data", str(tmp_path / "a")]).exit_code == 0
    cache = tmp_path / "cache" / "busi_features.h5"
    before = cache.read_bytes()
    r = CliRunner().invoke(main, [*run, "--data", str(tmp_path / "b")])
    assert r.exit_code == 2 and "holds the features of" in r.stderr and "--force" in r.stderr
    assert cache.read_bytes() == before
    assert CliRunner().invoke(main, [*run, "--data", str(tmp_path / "a")]).exit_code == 0   # its own root: fine
    assert CliRunner().invoke(main, [*run, "--data", str(tmp_path / "b"), "--force"]).exit_code == 0


def test_target_recall_nan_is_refused_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from busi_lite.cli import main

    for verb in (["train", "--out", str(tmp_path / "m")], ["calibrate", "--data", str(tmp_path)]):
        r = CliRunner().invoke(main, [*verb, "--target-recall", "nan", "--cache", str(tmp_path / "none.h5")])
        assert r.exit_code == 2 and "'nan' is not a finite number" in r.output + r.stderr, r.output


def test_a_damaged_cache_chunk_is_an_error_naming_the_dataset_and_file(tmp_path, tiny_backbone):
    import h5py
    import numpy as np
    import pytest
    from synth import make_busi_tree

    from busi_lite.features.cache import CacheError, FeatureCache, extract

    root = tmp_path / "d"
    make_busi_tree(root, n_per_class=(2, 2, 2), seed=1)
    cache = tmp_path / "c.h5"
    extract(root, cache, tiny_backbone, views=(), log=lambda m: None, progress=False)
    with h5py.File(cache, "r") as f:
        info = f["pooled/raw"].id.get_chunk_info(0)
        good = f["pooled/raw"][:]
    with open(cache, "r+b") as fh:                       # finite garbage inside the chunk, as a bad disk writes
        fh.seek(info.byte_offset + 64)
        fh.write(np.full(8, 0.25, np.float32).tobytes())
    with FeatureCache(cache) as fc, pytest.raises(CacheError, match=r"c.h5: pooled/raw cannot be read"):
        fc.pooled("raw")
    assert len(good) > 0 and np.isfinite(good).all()     # the data itself was fine before the damage
