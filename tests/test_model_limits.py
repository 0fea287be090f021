"""A model's declared sizes and OOD statistics are checked before they can hurt: uncompressed
member sizes from the zip directory, a cap on the card's shapes, positive OOD scales; a
non-finite OOD score is a flag."""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_faults_model import _reseal, tiny_model

from busi_lite.common.errors import ModelError
from busi_lite.model.model import Model
from busi_lite.serving.flags import FlagConfig, compute_flags


def _rewrite(npz, replace: dict, big: dict = ()):
    """Rewrite ``npz`` with arrays ``replace``d, and members ``big`` {name: (shape, bytes of zeros)}
    streamed deflate-compressed (never held in memory)."""
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(replace)
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for k, v in arrays.items():
            if k in dict(big):
                continue
            with zf.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(v), allow_pickle=False)
        for k, (shape, nbytes) in dict(big).items():
            with zf.open(f"{k}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
                chunk = bytes(16 << 20)
                for s in range(0, nbytes, len(chunk)):
                    f.write(chunk[:min(len(chunk), nbytes - s)])


def test_a_card_declaring_huge_weights_is_refused_before_anything_is_read(tmp_path):
    npz, js = tiny_model(hidden=4).save(tmp_path / "m")
    hidden = 60_000                                   # W1 1280 x 60000 float32: 307 MB of zeros
    card = json.loads(js.read_text())
    card["head"]["n_hidden"] = hidden
    js.write_text(json.dumps(card))
    _rewrite(npz, {"head.b1": np.zeros(hidden, np.float32), "head.W2": np.zeros((hidden, 3), np.float32)},
             big={"head.W1": ((1280, hidden), 1280 * hidden * 4)})
    assert npz.stat().st_size < 2 << 20
    _reseal(npz, js)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"m.json: the card declares .* MB of weights, over the 256 MB limit"):
            Model.load(tmp_path / "m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak / 2**20:.0f} MB allocated while refusing"


def test_a_member_inflating_past_its_shape_is_refused(tmp_path):
    npz, js = tiny_model(hidden=4).save(tmp_path / "m")
    # a member whose header says (4,) but which inflates to 64 MB (zeros after the array)
    _rewrite(npz, {}, big={"head.b1": ((4,), 64 << 20)})
    _reseal(npz, js)
    with pytest.raises(ModelError, match=r"array 'head.b1' inflates to 67,108,\d+ bytes, its shape \(4,\) needs"):
        Model.load(tmp_path / "m")


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_ood_scales_are_refused_at_load(tmp_path, bad):
    npz, js = tiny_model().save(tmp_path / "m")
    with np.load(npz, allow_pickle=False) as z:
        scales = z["ood.scales"].copy()
    scales[:] = bad
    _rewrite(npz, {"ood.scales": scales})
    _reseal(npz, js)
    with pytest.raises(ModelError, match="ood.scales' holds values <= 0"):
        Model.load(tmp_path / "m")
    card = json.loads(js.read_text())
    card["ood"]["resid_var"] = 0.0
    js.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="resid_var must be > 0"):
        Model.load(tmp_path / "m")


@pytest.mark.parametrize("score", [np.nan, np.inf])
def test_a_non_finite_ood_score_is_flagged_never_passed(score):
    proba = np.array([[0.1, 0.8, 0.1]])
    thr = {"low_confidence": 0.4, "ood_threshold": 2.0, "malignant_threshold": 0.5}
    flags, checks = compute_flags(proba, None, np.array([score]), ("normal", "benign", "malignant"), thr,
                                  FlagConfig(), None)
    assert checks[0]["unusual_input"] == "flagged"
    assert any(f.name == "unusual_input" and "not finite" in f.reason for f in flags[0])


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["calibration"].update(low_confidence=2.0), r"low_confidence must be within \[0, 1\], got 2.0"),
    (lambda d: d["calibration"].update(malignant_threshold=1.5), r"malignant_threshold must be within \[0, 1\]"),
    (lambda d: d["calibration"].update(ood_threshold=-1.0), "ood_threshold must be >= 0"),
    (lambda d: d.update(classes=["normal", "benign", "cancer"]), "include 'malignant'"),
])
def test_card_values_out_of_range_or_renamed_classes_are_refused_naming_the_card(tmp_path, edit, match):
    _, js = tiny_model().save(tmp_path / "m")
    card = json.loads(js.read_text())
    edit(card)
    js.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=match) as e:
        Model.load(tmp_path / "m")
    assert "m.json" in str(e.value) and "--threshold" not in str(e.value)
