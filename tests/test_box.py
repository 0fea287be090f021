"""Lesion-box mode and serving that follows the model (preprocessing v1/v2, flip averaging).

Tiny synthetic world: a BUSI-like tree, the tiny ONNX backbone, a cache with the flip and box
views, a plain model, and the same model plus a box head (busi_lite.training.box)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synth import make_busi_tree

from busi_lite.cli import main
from busi_lite.common.errors import ConfigError, ModelError
from busi_lite.features.backbone import Backbone, preprocess
from busi_lite.features.cache import FeatureCache, extract
from busi_lite.features.preprocess import V2, Preprocessing, mirror
from busi_lite.features.views import BOX_VIEWS
from busi_lite.heads.box import BoxHead
from busi_lite.heads.optim import lbfgs
from busi_lite.io import data as D
from busi_lite.io.imread import read_rgb
from busi_lite.model.config import Config
from busi_lite.model.model import Model
from busi_lite.serving.boxes import BoxError, LesionBox, make_box, read_boxes_csv
from busi_lite.serving.inference import NO_BOX_NOTE, Predictor, predict_images
from busi_lite.training.box import MIRROR_GAIN, add_box_head
from busi_lite.training.experiments import fit_model


@pytest.fixture(scope="module")
def world(tiny_backbone, tmp_path_factory):
    base = tmp_path_factory.mktemp("box_world")
    root = base / "busi"
    info = make_busi_tree(root, n_per_class=(6, 16, 14), seed=1, extras=False)
    cache = base / "cache.h5"
    extract(root, cache, tiny_backbone, views=("flip",) + BOX_VIEWS, log=lambda m: None, progress=False)
    fc = FeatureCache(cache)
    model, _ = fit_model(fc, Config.build(name="tiny", epochs=20, hidden=16, lr=1e-3, batch=8), seed=0, folds=3)
    plain = base / "plain"
    model.save(plain)
    boxed = add_box_head(Model.load(plain), fc, folds=3, flip=True)
    boxed.save(base / "boxed")
    lesions = [root / p for p, c in info["images"].items() if c != "normal"]
    return {"base": base, "root": root, "cache": fc, "plain": plain, "boxed": base / "boxed",
            "backbone": tiny_backbone, "lesions": sorted(lesions), "info": info}


def _mask_box(path: Path):
    """The lesion mask's box (x0, y0, x1, y1), exclusive, of a synthetic image."""
    from PIL import Image

    m = np.asarray(Image.open(path.with_name(path.stem + "_mask.png")).convert("L")) > 127
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ---------------------------------------------------------------- serving follows the model

def test_v1_serving_is_bit_identical_to_the_old_path(world):
    pr = Predictor(world["plain"], world["backbone"])
    assert pr.preprocessing.name == Preprocessing.named("v1").name and pr.flip is False
    paths = world["lesions"][:3]
    got = pr.predict(paths)
    rgbs = [read_rgb(p) for p in paths]
    bb = Backbone(world["backbone"])
    for rgb in rgbs:  # the input is exactly the old preprocess
        assert np.array_equal(Preprocessing.named("v1")(rgb), preprocess(rgb))
    r = pr.model.predict_features(bb.features(np.stack([preprocess(x) for x in rgbs])))
    for k, p in enumerate(got):
        assert [p.proba[c] for c in pr.model.classes] == [float(v) for v in r["proba"][k]]
        assert p.box is None and p.box_proba is None and p.notes == []


def test_flip_averaging_is_the_mean_of_the_two_passes(world, tmp_path):
    m = Model.load(world["plain"])
    m.card = replace(m.card, config=replace(m.card.config, flip=True)) if hasattr(m.card.config, "flip") else None
    if m.card is None:
        pytest.skip("Config has no flip field yet")
    pr = Predictor(m, world["backbone"])
    assert pr.flip is True
    path = world["lesions"][0]
    (p,) = pr.predict([path])
    x = preprocess(read_rgb(path))[None]
    bb = Backbone(world["backbone"])
    a = m.predict_features(bb.features(x))["proba"][0]
    b = m.predict_features(bb.features(mirror(x)))["proba"][0]
    want = (np.asarray(a, np.float64) + b) / 2
    assert np.allclose([p.proba[c] for c in m.classes], want, atol=1e-6)
    assert not np.allclose(a, b)  # the mirror really is another input


def test_flip_averaging_mirrors_the_lesion_map_back():
    class Head:
        has_lesion_map = True

        @staticmethod
        def feature_inputs(cells):
            return cells

        def predict(self, cells):
            from busi_lite.heads import HeadOutput
            les = cells[:, :, 0].copy()            # lesion = first feature of each cell
            return HeadOutput(np.full((len(cells), 3), 1 / 3), les)

    m = Model(Head())
    f = np.zeros((1, 7, 7, 1280), np.float32)
    f[0, 2, 1, 0] = 1.0                             # a lesion cell left of centre
    fm = f[:, :, ::-1, :]                          # what the mirrored image gives
    out = m.predict_features(f, fm)
    assert out["lesion"].reshape(7, 7)[2, 1] == pytest.approx(1.0)
    assert out["lesion"].reshape(7, 7)[2, 5] == pytest.approx(0.0)


def test_v2_model_is_served_with_v2_and_unknown_preprocessing_is_refused(world, tmp_path):
    m = Model.load(world["plain"])
    m.card = replace(m.card, preprocess_version=V2)
    m.save(tmp_path / "v2")
    pr = Predictor(tmp_path / "v2", world["backbone"], show_anyway=True)   # v1 weights on v2 inputs: unusual
    assert pr.preprocessing.name == V2
    path = world["lesions"][0]
    (p,) = pr.predict([path])
    bb = Backbone(world["backbone"])
    r = pr.model.predict_features(bb.features(Preprocessing(V2)(read_rgb(path))[None]))
    assert np.allclose([p.proba[c] for c in pr.model.classes], r["proba"][0], atol=1e-7)
    js = tmp_path / "v2.json"
    d = json.loads(js.read_text())
    d["preprocess_version"] = "sepia-v9"
    js.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="sepia-v9"):
        Model.load(tmp_path / "v2")


# ---------------------------------------------------------------- the box head

def test_box_head_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 6)), rng.integers(0, 2, 30)
    h = BoxHead(6, C=0.5)
    h.params["mean"], h.params["scale"] = X.mean(0).astype(np.float32), np.array([1.3], np.float32)
    h.params["w"], h.params["b"] = rng.normal(size=6).astype(np.float32), np.array([0.2], np.float32)
    s = rng.uniform(0.5, 1.5, 30)
    _, g = h.loss_and_grads(X, y, s)
    fun = h._objective(h._z(X), y.astype(float), s)
    theta = np.concatenate([h.params["w"], h.params["b"]]).astype(np.float64)
    num = np.array([(fun(theta + e)[0] - fun(theta - e)[0]) / 2e-6 for e in np.eye(7) * 1e-6])
    assert np.allclose(np.concatenate([g["w"], g["b"]]), num, rtol=1e-4, atol=1e-6)


def test_box_head_fit_reaches_the_minimum_and_roundtrips():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 8))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    h = BoxHead(8, C=1.0)
    hist = h.fit(X, y)
    assert hist["converged"] == [1.0] and hist["iterations"][0] == h.iterations > 0
    _, g = h.loss_and_grads(X, y)
    assert np.abs(np.concatenate([g["w"], g["b"]])).max() < 1e-3   # a stationary point of the convex objective
    assert ((h.predict_proba(X)[:, 1] > 0.5) == y).mean() > 0.8
    h2 = BoxHead.from_params(h.config(), h.params)
    assert np.array_equal(h2.predict_proba(X), h.predict_proba(X))
    strong = BoxHead(8, C=1e-4)
    strong.fit(X, y)                                               # strong L2 shrinks the weights
    assert np.linalg.norm(strong.params["w"]) < 0.2 * np.linalg.norm(h.params["w"])
    with pytest.raises(ConfigError, match="C"):
        BoxHead(8, C=0)
    x, _, ok = lbfgs(lambda t: (float(((t - 3) ** 2).sum()), 2 * (t - 3)), np.zeros(4))
    assert ok and np.allclose(x, 3, atol=1e-5) and ((x - 3) ** 2).sum() < 1e-9


def test_box_head_warm_start_keeps_the_function_and_the_optimum():
    """start=: the starting point is the given head's decision function in the new fit's mean/scale,
    and the fit ends at the same optimum as from zero (within the solver's tolerance), sooner."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)) + 1  # correlated features: many iterations
    y = (X[:, 0] + X[:, 1] + 3 * rng.normal(size=300) > 2).astype(int)
    full = BoxHead(40, C=1.0)
    full.fit(X, y)
    sub = X[:240] + 0.3                                          # another mean and scale than ``full``'s
    cold, warm = BoxHead(40, C=1.0), BoxHead(40, C=1.0)
    cold.fit(sub, y[:240])
    warm.params["mean"], warm.params["scale"] = cold.params["mean"], cold.params["scale"]
    theta = warm._start(full)
    assert np.allclose(warm._z(X) @ theta[:-1] + theta[-1], full.decision(X), atol=1e-4)
    hist = warm.fit(sub, y[:240], start=full)
    assert hist["converged"] == [1.0] and warm.iterations < cold.iterations
    assert np.allclose(warm.params["w"], cold.params["w"], atol=1e-5)
    assert np.allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-6)


def test_box_model_saves_loads_and_is_checked(world, tmp_path):
    m = Model.load(world["boxed"])
    assert m.supports_box and m.card.box.classes == ["benign", "malignant"]
    assert 0 <= m.card.box.malignant_threshold <= 1 and m.card.box.train_views[0].startswith("box_j")
    assert not Model.load(world["plain"]).supports_box
    auto = add_box_head(Model.load(world["plain"]), world["cache"], folds=3)   # flip="auto": the OOF rule
    b = auto.card.box
    assert b.flip == (b.oof_auc_mirror - b.oof_auc_no_mirror >= MIRROR_GAIN) and m.card.box.flip is True
    assert np.array_equal(auto.box_head.params["w"], m.box_head.params["w"])  # the same head, only the rule differs
    # a card WITHOUT the box section but weights WITH box arrays: refused (the hash is re-made on save)
    bare = Model(m.head, replace(m.card, box=None), m.ood, None)
    bare.save(tmp_path / "bare")
    import zipfile
    with zipfile.ZipFile(tmp_path / "bare.npz", "a") as z:
        z.writestr("box_head.w.npy", b"")
    d = json.loads((tmp_path / "bare.json").read_text())
    import hashlib
    d["weights_sha256"] = hashlib.sha256((tmp_path / "bare.npz").read_bytes()).hexdigest()
    (tmp_path / "bare.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="box"):
        Model.load(tmp_path / "bare")
    # a box section but no box arrays: refused
    with pytest.raises(ModelError):
        Model(m.head, m.card, m.ood, None).save(tmp_path / "half")
    # a damaged box section: refused at load
    d = json.loads(Path(str(world["boxed"]) + ".json").read_text())
    d["box"]["malignant_threshold"] = 3.0
    (tmp_path / "bad.json").write_text(json.dumps(d))
    (tmp_path / "bad.npz").write_bytes(Path(str(world["boxed"]) + ".npz").read_bytes())
    with pytest.raises(ModelError, match="malignant_threshold"):
        Model.load(tmp_path / "bad")


def test_box_prediction_path_equals_the_box_head_on_the_crop(world):
    pr = Predictor(world["boxed"], world["backbone"])
    assert pr.supports_box
    path = world["lesions"][0]
    box = _mask_box(path)
    (p,) = pr.predict([path], boxes={path: box})
    assert p.ok and p.box == list(box) and set(p.box_proba) == {"benign", "malignant"}
    rgb = read_rgb(path)
    bb, m = Backbone(world["backbone"]), pr.model
    x, xb = preprocess(rgb)[None], Preprocessing.named("v1")(rgb, box=box)[None]
    pool = lambda a: bb.features(a).reshape(1, -1, 1280).mean(axis=1)  # noqa: E731
    want = m.predict_box(pool(x), pool(xb), pool(mirror(x)), pool(mirror(xb)))[0]
    assert np.allclose([p.box_proba["benign"], p.box_proba["malignant"]], want, atol=1e-6)
    assert p.box_malignant_alert == (want[1] >= m.card.box.malignant_threshold)
    plain = pr.predict([path])[0]                       # the main head's answer is unchanged by a box
    assert plain.proba == p.proba and plain.box_proba is None
    # the same through predict_arrays and the Python API
    (q,) = pr.predict_arrays([rgb], boxes=[box])
    assert q.box_proba == p.box_proba
    # without the mirrored pair: the box head on [whole, crop] only
    m2 = Model(m.head, replace(m.card, box=replace(m.card.box, flip=False)), m.ood, m.box_head)
    (q,) = Predictor(m2, world["backbone"]).predict_arrays([rgb], boxes=[box])
    assert np.allclose([q.box_proba["benign"], q.box_proba["malignant"]], m.predict_box(pool(x), pool(xb))[0],
                       atol=1e-6)
    (r,) = predict_images(path, model=world["boxed"], backbone=world["backbone"], box=",".join(map(str, box)))
    assert r.box_proba == p.box_proba


def test_box_outside_the_image_is_an_error_naming_its_source(world):
    pr = Predictor(world["boxed"], world["backbone"])
    path = world["lesions"][0]
    (p,) = pr.predict([path], boxes={path: LesionBox(5000, 5000, 6000, 6000, "--box")})
    assert not p.ok and "--box" in p.error and "outside" in p.error and str(path) in p.error
    with pytest.raises(BoxError, match="outside"):
        pr.predict_arrays([read_rgb(path)], boxes=[(900, 900, 950, 950)])
    with pytest.raises(ConfigError, match="exactly one image"):
        predict_images([path, path], model=world["boxed"], backbone=world["backbone"], box="1,1,20,20")


def test_model_without_box_head_ignores_the_box_with_a_note(world):
    pr = Predictor(world["plain"], world["backbone"])
    path = world["lesions"][0]
    (p,) = pr.predict([path], boxes={path: (5000, 1, 6000, 40)})  # not even checked: it is not used
    assert p.ok and p.notes == [NO_BOX_NOTE] and p.box is None and p.box_proba is None
    assert p.proba == pr.predict([path])[0].proba


# ---------------------------------------------------------------- boxes.csv and the CLI

def test_boxes_csv_parsing(tmp_path):
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "boxes.csv"
    csv.write_text("file,x0,y0,x1,y1,comment\nsub/a.png,1,2,30,40,hi\n\n" + f"{tmp_path / 'b.png'},0,0,10,10,\n")
    got = read_boxes_csv(csv)
    assert got[(tmp_path / "sub" / "a.png").resolve()].as_tuple() == (1, 2, 30, 40)
    assert got[(tmp_path / "b.png").resolve()].source == f"{csv} line 4"
    for body, where in [("name,x0,y0,x1,y1\na.png,1,2,3,4\n", "line 1"),
                        ("file,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,two,3,4\n", "line 3"),
                        ("file,x0,y0,x1,y1\na.png,10,2,3,4\n", "line 2"),
                        ("file,x0,y0,x1,y1\na.png,1,2,3,4\na.png,1,2,5,6\n", "line 3"),
                        ("file,x0,y0,x1,y1\na.png,1,2\n", "line 2"),
                        ("file,x0,y0,x1,y1\n,1,2,3,4\n", "line 2")]:
        csv.write_text(body)
        with pytest.raises(BoxError, match=where):
            read_boxes_csv(csv)
    with pytest.raises(BoxError, match="--box"):
        make_box("1,2,3", "--box")
    with pytest.raises(BoxError, match="--box"):
        make_box("1,2,nan,4", "--box")


def test_cli_box_and_boxes(world, tmp_path):
    def run(*a):
        return CliRunner().invoke(main, ["predict", "--backbone", str(world["backbone"]), *a])

    path = world["lesions"][0]
    box = _mask_box(path)
    r = run("--model", str(world["boxed"]), str(path), "--box", ",".join(map(str, box)), "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)[0]
    assert rec["box"] == list(box) and rec["box_proba"]["malignant"] >= 0
    r = run("--model", str(world["boxed"]), str(path), "--box", "5000,1,6000,40")
    assert r.exit_code == 1 and "--box" in r.output and "outside" in r.output
    r = run("--model", str(world["boxed"]), str(world["root"] / "benign"), "--box", "1,1,20,20")
    assert r.exit_code != 0 and "--box" in r.output
    # --boxes for a folder: rows name files relative to the csv; a file without a row gets no box
    other = world["lesions"][1]
    csv = tmp_path / "boxes.csv"
    csv.write_text(f"file,x0,y0,x1,y1\n{path},{','.join(map(str, box))}\ntypo.png,1,1,20,20\n")
    r = run("--model", str(world["boxed"]), str(path), str(other), "--boxes", str(csv), "--csv")
    assert r.exit_code == 0, r.output
    assert "line 3" in r.stderr and "typo.png" in r.stderr        # a row naming no input is said
    lines = r.stdout.splitlines()
    head = lines[0].split(",")
    assert "box_p_malignant" in head and lines[1].count(",") == lines[2].count(",")
    csv.write_text(f"file,x0,y0,x1,y1\n{path},1,2,3\n")
    r = run("--model", str(world["boxed"]), str(path), "--boxes", str(csv))
    assert r.exit_code != 0 and "line 2" in r.output
    csv.write_text(f"file,x0,y0,x1,y1\n{path},4000,4000,4100,4100\n")
    r = run("--model", str(world["boxed"]), str(path), "--boxes", str(csv))
    assert r.exit_code == 1 and "line 2" in r.output and "outside" in r.output
    r = run("--model", str(world["plain"]), str(path), "--box", ",".join(map(str, box)))
    assert r.exit_code == 0 and NO_BOX_NOTE in r.output


def test_cli_train_box_never_overwrites(world, tmp_path):
    args = ["train-box", "--model", str(world["plain"]), "--cache", str(world["cache"].path), "--folds", "3"]
    r = CliRunner().invoke(main, args + ["--out", str(world["plain"])])
    assert r.exit_code != 0 and "--out" in r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "nb")])
    assert r.exit_code == 0, r.output
    assert Model.load(tmp_path / "nb").supports_box


def test_web_api_uses_the_box_head(world):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    from starlette.testclient import TestClient

    from busi_lite.web.app import create_app

    path = world["lesions"][0]
    box = _mask_box(path)
    c = TestClient(create_app(Predictor(world["boxed"], world["backbone"])), raise_server_exceptions=False,
                   base_url="http://127.0.0.1")
    assert c.get("/api/info").json()["model"]["supports_box"] is True
    r = c.post("/api/predict", files=[("files", ("a.png", path.read_bytes(), "image/png"))],
               data={"box": ",".join(map(str, box))})
    assert r.status_code == 200, r.text
    (rec,) = r.json()
    assert rec["box"] == list(box) and rec["box_proba"] is not None and NO_BOX_NOTE not in rec["notes"]
    want = Predictor(world["boxed"], world["backbone"]).predict([path], boxes={path: box})[0]
    assert rec["box_proba"] == pytest.approx(want.box_proba, abs=1e-6)


def test_dicom_box_is_given_in_frame_pixels(world, tmp_path):
    pytest.importorskip("pydicom")
    from web_support import dicom_bytes

    path = world["lesions"][0]
    rgb = read_rgb(path)
    h, w = rgb.shape[:2]
    frame = np.zeros((h + 40, w + 60, 3), np.uint8)       # the image sits at (30, 20) of a bigger frame
    frame[20:20 + h, 30:30 + w] = rgb
    dcm = tmp_path / "us.dcm"
    dcm.write_bytes(dicom_bytes(frame, region=(30, 20, 30 + w, 20 + h), grey=False))
    x0, y0, x1, y1 = _mask_box(path)
    pr = Predictor(world["boxed"], world["backbone"])
    (p,) = pr.predict([dcm], boxes={dcm: (x0 + 30, y0 + 20, x1 + 30, y1 + 20)})
    assert p.ok and p.dicom_crop == [30, 20, 30 + w, 20 + h]
    assert p.box == [x0 + 30, y0 + 20, x1 + 30, y1 + 20]            # reported in frame pixels
    (q,) = pr.predict_arrays([rgb], boxes=[(x0, y0, x1, y1)])       # = the region's own pixels
    assert p.box_proba == pytest.approx(q.box_proba, abs=1e-6)
    (bad,) = pr.predict([dcm], boxes={dcm: LesionBox(0, 0, 25, 15, "boxes.csv line 9")})  # outside the region
    assert not bad.ok and "boxes.csv line 9" in bad.error and "region" in bad.error


def test_shipped_model_serves_as_before(real_data, real_backbone):
    """The committed default model through today's Predictor (its preprocessing, flip averaging when the
    card says so) reproduces the test-image probabilities its card recorded at training from the
    feature cache (rounded to 5 decimals there)."""
    m = Model.load()
    assert m.preprocessing.name == Preprocessing.named(m.card.preprocess_version).name
    tp = m.card.test_predictions
    pick = list(range(0, len(tp.path), max(1, len(tp.path) // 8)))[:8]
    got = Predictor(m, real_backbone).predict([real_data / tp.path[i] for i in pick])
    for k, i in zip(range(len(pick)), pick):
        assert np.allclose([got[k].proba[c] for c in m.classes], tp.proba[i], atol=2e-5), tp.path[i]


def test_lesion_map_model_proposes_its_lesion_box(tiny_world):
    from busi_lite.heads import HeadOutput
    from busi_lite.serving.inference import PROPOSED_NOTE

    tiny_backbone = tiny_world["backbone"]
    m = Model.load(tiny_world["model"])  # conftest.py: shared, read-only; the head is patched in memory only
    real = m.head.predict

    def sharper(X):  # the tiny model's maps stay below 0.5: put a clear lesion in cells (2..3, 4..5)
        out = real(X)
        les = np.zeros_like(out.lesion).reshape(-1, 7, 7)
        les[:, 2:4, 4:6] = 0.9
        return HeadOutput(out.proba, les.reshape(len(les), 49))

    m.head.predict = sharper
    images = tiny_world["images"][:4]
    preds = Predictor(m, tiny_backbone).predict(images)
    for p in preds:
        assert p.lesion_bbox is not None and p.proposed_box == p.lesion_bbox and PROPOSED_NOTE in p.notes
        l, t, r, b = p.crop_box
        cx, cy = (p.proposed_box[0] + p.proposed_box[2]) / 2, (p.proposed_box[1] + p.proposed_box[3]) / 2
        assert abs(cx - (l + (r - l) * 5 / 7)) < (r - l) / 14 and abs(cy - (t + (b - t) * 3 / 7)) < (b - t) / 14


def test_browser_box_mode_shows_the_box_heads_answer(world, tmp_path):
    from web_support import browser_page, chromium_path, draw_box, running_server, upload

    if chromium_path() is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")
    from busi_lite.web.app import create_app

    pr = Predictor(world["boxed"], world["backbone"])
    with running_server(create_app(pr, model_path=str(world["boxed"]))) as url, browser_page(url) as (page, console):
        upload(page, [world["lesions"][0]])
        card = page.locator(".card").first
        draw_box(page, card, (0.2, 0.2, 0.7, 0.7))
        shown = card.locator("[data-box-alert]").inner_text()
        page.screenshot(path=str(tmp_path / "box_mode.png"))
        assert shown.startswith("Lesion-box mode") and "p(malignant)" in shown and console == []


def test_serving_inputs_equal_the_cache_views_training_used(world):
    """What serving feeds the backbone for a box (and a mirror) is what extraction cached for training."""
    from busi_lite.features.preprocess import mask_box
    from busi_lite.serving.inference import _input, _Prep

    fc, root = world["cache"], world["root"]
    samples = {s.path: s for s in D.discover(root).samples}
    bb = Backbone(world["backbone"])
    prep = _Prep(Preprocessing(fc.preprocess_version), use_box=True)
    rows = [i for i in range(len(fc)) if fc.has_mask[i]][:5]
    for r in rows:
        rgb = read_rgb(root / fc.paths[r])
        box = mask_box(D.read_mask(root, samples[fc.paths[r]], (rgb.shape[1], rgb.shape[0])))
        inp = _input(root / fc.paths[r], rgb, False, None, prep, LesionBox(*box))
        pooled = bb.features(np.stack([inp.xb, mirror(inp.x)])).reshape(2, -1, 1280).mean(axis=1)
        assert np.allclose(pooled[0], fc.pooled("box", [r])[0], atol=1e-5)
        assert np.allclose(pooled[1], fc.pooled("flip", [r])[0], atol=1e-5)


def test_train_box_flag_adds_the_box_head(world, tmp_path):
    r = CliRunner().invoke(main, ["train", "--cache", str(world["cache"].path), "--epochs", "3", "--box",
                                  "--out", str(tmp_path / "tb")])
    assert r.exit_code == 0, r.output
    m = Model.load(tmp_path / "tb")
    assert m.supports_box and m.card.box.n_train_images >= 1
    assert m.card.split.digest == Model.load(world["plain"]).card.split.digest   # the same split


def test_site_calibration_keeps_the_box_head(world, tmp_path):
    """A model with a lesion-box head can be site-calibrated: the new model keeps the box head and its
    card section (it once dropped the head but kept the section, so saving failed)."""
    from busi_lite.evaluation.sitecal import calibrated_model, fit_site_calibration, save_new_model

    m = Model.load(world["boxed"])
    y = np.array([0, 1, 1, 0, 1, 1, 0, 1], bool)
    p = np.array([0.1, 0.8, 0.6, 0.3, 0.9, 0.7, 0.2, 0.55])
    sc = fit_site_calibration(y, p, 0.9, "clinic", m.card.calibration.malignant_threshold,
                              m.card.calibration.target_recall)
    save_new_model(calibrated_model(m, sc), tmp_path / "site")
    back = Model.load(tmp_path / "site")
    assert back.supports_box and back.card.box is not None
    assert back.card.calibration.malignant_threshold == sc.threshold
    x = world["cache"].pooled("raw", [0])
    np.testing.assert_array_equal(back.head.predict_proba(x), m.head.predict_proba(x))
