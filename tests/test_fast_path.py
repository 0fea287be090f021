"""The Predictor's fast path (fused pixel statistics, decode threads, batched backbone) gives the
same answers as a straightforward reference written out here: Pillow decode, centre crop + resize,
one backbone run per image (the image and its mirror), the model's head, the pixel rules computed
the plain way. Runs on the SHIPPED model and backbone (whatever they are), never on stored numbers."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from synth import make_busi_tree

from busi_lite.common.resources import packaged
from busi_lite.features.preprocess import V1
from busi_lite.model.model import Model
from busi_lite.serving.flags import MAX_COLOUR, MIN_GRAY_STD, pixel_stats
from busi_lite.serving.inference import Predictor

TOL = 1e-6


def reference(model: Model, session, path) -> dict:
    """One image the plain way -> {proba [C], lesion [49] | None, ood, gray_std, colour}."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        a = np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR, box=box), np.float32)
    if model.preprocessing.name == V1:
        x = a / 127.5 - 1.0
    else:   # v2: grey, 1st/99th percentile stretch, three equal channels
        g = a.mean(axis=2)
        lo, hi = np.percentile(g, [1, 99])
        g = np.clip((g - lo) / max(hi - lo, 1.0), 0.0, 1.0) * 255.0
        x = np.repeat(g[..., None], 3, axis=2) / 127.5 - 1.0
    x = x.astype(np.float32)
    batch = np.stack([x, x[:, ::-1]]) if model.flip else x[None]
    f = session.run(["features"], {"input": np.ascontiguousarray(batch)})[0]
    r = model.predict_features(f[:1], f[1:] if model.flip else None)
    v = (x + 1.0) * 127.5
    return {"proba": np.asarray(r["proba"][0], np.float64),
            "lesion": None if r["lesion"] is None else np.asarray(r["lesion"][0], np.float64),
            "ood": None if model.ood is None else float(model.ood.score(r["pooled"])[0]),
            "gray_std": float(v.mean(axis=2).std()), "colour": float((v.max(axis=2) - v.min(axis=2)).mean())}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    if not packaged("model").with_suffix(".npz").is_file() or not packaged("backbone").is_file():
        pytest.skip("no packaged model/backbone in this install")
    root = tmp_path_factory.mktemp("fast")
    make_busi_tree(root / "tree", n_per_class=(7, 7, 7), extras=False)
    folder = root / "folder"
    folder.mkdir()
    for p in sorted((root / "tree").rglob("*).png")):
        shutil.copy(p, folder / p.name)
    rng = np.random.default_rng(3)   # pixel-rule cases: near-constant and strongly coloured
    Image.fromarray(np.full((300, 260, 3), 90, np.uint8)).save(folder / "flat.png")
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / "colour.png")
    return Predictor(batch_size=8, show_anyway=True), sorted(folder.iterdir())   # every verdict shown


def test_fast_path_matches_reference_on_shipped_model(shipped):
    pr, files = shipped
    session = ort.InferenceSession(str(pr.backbone.path), providers=["CPUExecutionProvider"])
    folder = pr.predict([files[0].parent])           # decode threads, batches of 8, one batch ahead
    single = [pr.predict([f])[0] for f in files]      # one file: decoded in the calling thread
    assert len(folder) == len(files) > 2 * pr.batch_size
    for f, a, b in zip(files, folder, single):
        ref = reference(pr.model, session, f)
        for p in (a, b):
            assert p.ok and p.path == str(f)
            proba = np.array([p.proba[c] for c in pr.model.classes])
            np.testing.assert_allclose(proba, ref["proba"], rtol=0, atol=TOL)
            assert p.label == pr.model.classes[int(ref["proba"].argmax())]
            assert (p.lesion is None) == (ref["lesion"] is None), f.name
            if ref["lesion"] is not None:
                np.testing.assert_allclose(np.ravel(p.lesion), ref["lesion"], rtol=0, atol=1e-4)  # rounded to 4 places
            assert (p.ood_score is None) == (ref["ood"] is None), f.name
            if ref["ood"] is not None:
                assert p.ood_score == pytest.approx(ref["ood"], rel=1e-5, abs=TOL)
            pixel = [r for fl in p.flags if fl.name == "unusual_input" for r in [fl.reason]]
            hit = ref["gray_std"] < MIN_GRAY_STD or ref["colour"] > MAX_COLOUR
            assert any("near-constant" in r or "coloured" in r for r in pixel) == hit, f.name
    names = {f.name: p for f, p in zip(files, folder)}
    assert any("near-constant" in fl.reason for fl in names["flat.png"].flags)
    assert any("coloured" in fl.reason for fl in names["colour.png"].flags)


def test_pixel_stats_bit_identical_to_plain_formula():
    rng = np.random.default_rng(0)
    for k in range(20):
        x = rng.uniform(-1, 1, (224, 224, 3)).astype(np.float32)
        if k % 3 == 0:
            x[..., 1] = x[..., 2] = x[..., 0]   # grey
        v = (x + 1.0) * 127.5
        plain = {"gray_std": float(v.mean(axis=2).std()), "colour": float((v.max(axis=2) - v.min(axis=2)).mean())}
        assert pixel_stats(x) == plain


def test_resized_then_intensity_is_the_preprocessing_and_commutes_with_mirror():
    """Extraction holds views as uint8 (Preprocessing.resized) and makes them float32 at the backbone:
    the same input, bit for bit, as the one-step call, also for mirrored views, for both versions."""
    from busi_lite.features.preprocess import Preprocessing, mirror

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    for name in ("v1", "v2"):
        pp = Preprocessing.named(name)
        for box in (None, (40, 30, 200, 180)):
            a = pp.resized(rgb, box)
            assert a.dtype == np.uint8 and a.shape == (224, 224, 3)
            np.testing.assert_array_equal(pp.intensity(a), pp(rgb, box))
            np.testing.assert_array_equal(pp.intensity(mirror(a)), mirror(pp(rgb, box)))


@pytest.mark.parametrize("kind", ["plain", "mtl"])
def test_fit_casting_once_is_bit_identical(kind, monkeypatch):
    """fit() casts a float16 X once (CAST_ONCE_BYTES); batch-by-batch casting gives the same weights."""
    import busi_lite.heads.base as B
    from busi_lite.heads.registry import get_head

    rng = np.random.default_rng(2)
    n, d = 70, 32
    X = rng.standard_normal((n, 49, d) if kind == "mtl" else (n, d)).astype(np.float16)
    y = rng.integers(0, 3, n)
    kw = {"lr": 1e-2, "batch_size": 16, "epochs": 4, "seed": 3, "X_val": X[:9], "y_val": y[:9]}
    if kind == "mtl":
        kw["seg_target"] = rng.uniform(0, 1, (n, 49))
    cls = get_head(kind)

    def train():
        h = cls(d, 8, 3, seed=0)
        hist = h.fit(X, y, **kw)
        return h.params, hist

    once, hist_once = train()
    monkeypatch.setattr(B, "CAST_ONCE_BYTES", 0)   # every batch cast on its own
    each, hist_each = train()
    for k in once:
        np.testing.assert_array_equal(once[k], each[k])
    assert hist_once == hist_each
