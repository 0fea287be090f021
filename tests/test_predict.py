"""predict / evaluate: API, CLI, input errors, flags, overlays, backbone refusal, real-asset checks."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter
from synth import make_odd_images, make_tiny_onnx

from busi_lite.cli import main
from busi_lite.common.errors import ModelError
from busi_lite.common.jsonio import dumps as dump
from busi_lite.evaluation.flag_eval import evaluate_flags
from busi_lite.features.cache import FeatureCache
from busi_lite.io.imread import read_rgb
from busi_lite.model.config import Config
from busi_lite.model.model import Model
from busi_lite.serving.flags import FlagConfig, compute_flags
from busi_lite.serving.geometry import lesion_geometry
from busi_lite.serving.inference import Predictor, predict_images
from busi_lite.training.core import split_for
from busi_lite.training.experiments import fit_model

CLASSES = ("normal", "benign", "malignant")


# --------------------------------------------------------------------------- #
# Synthetic non-ultrasound images (RGB uint8)
# --------------------------------------------------------------------------- #
def noise_image(seed=0, w=500, h=400):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def blank_image(value=0, w=500, h=400):
    return np.full((h, w, 3), value, np.uint8)


def photo_like_image(seed=0, w=640, h=480):
    """Natural-photo-like: sky and ground gradients, a sun, coloured shapes, an orange cat silhouette."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    sky = yy < 0.55
    img = np.stack([np.where(sky, 90 + 80 * yy, 60 + 60 * xx), np.where(sky, 150 + 60 * yy, 140 - 40 * yy),
                    np.where(sky, 230 - 40 * yy, 50 + 20 * xx)], axis=-1)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse([int(0.75 * w), int(0.08 * h), int(0.88 * w), int(0.25 * h)], fill=(255, 220, 80))
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(int(0.4 * h), h - 40))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        sw, sh = int(rng.integers(30, 160)), int(rng.integers(30, 120))
        (d.rectangle if rng.random() < 0.5 else d.ellipse)([x0, y0, x0 + sw, y0 + sh], fill=col)
    cx, cy = int(0.35 * w), int(0.62 * h)
    d.ellipse([cx - 90, cy - 40, cx + 90, cy + 60], fill=(210, 120, 40))
    d.ellipse([cx + 50, cy - 100, cx + 140, cy - 10], fill=(220, 130, 50))
    d.polygon([(cx + 55, cy - 80), (cx + 70, cy - 130), (cx + 90, cy - 90)], fill=(200, 110, 40))
    d.polygon([(cx + 100, cy - 90), (cx + 125, cy - 130), (cx + 135, cy - 75)], fill=(200, 110, 40))
    a = np.asarray(im.filter(ImageFilter.GaussianBlur(1.5))).astype(np.float64) + rng.normal(0, 6, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def chest_xray_image(size=1024, seed=0):
    """Chest-X-ray-like, grey: dark background, body, two dark lung fields, bright mediastinum,
    rib arcs and clavicles."""
    rng = np.random.default_rng(seed)
    n = size
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.full((n, n), 25.0)
    img[((xx - 0.5) / 0.46) ** 2 + ((yy - 0.55) / 0.55) ** 2 < 1] = 150
    for side in (-1, 1):
        img[((xx - (0.5 + side * 0.2)) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1] = 55
    img[(np.abs(xx - 0.5) < 0.07 + 0.05 * (yy > 0.55)) & (yy > 0.15)] = 200
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for k in range(9):
        y0 = int((0.22 + 0.065 * k) * n)
        for side in (-1, 1):
            x_in, x_out = int((0.5 + side * 0.06) * n), int((0.5 + side * 0.38) * n)
            box = [min(x_in, x_out), y0 - int(0.05 * n), max(x_in, x_out), y0 + int(0.09 * n)]
            d.arc(box, *((180, 300) if side < 0 else (240, 360)), fill=215, width=max(3, n // 90))
    for side in (-1, 1):
        d.line([(int((0.5 + side * 0.05) * n), int(0.2 * n)), (int((0.5 + side * 0.33) * n), int(0.16 * n))],
               fill=230, width=max(4, n // 70))
    a = np.asarray(im.filter(ImageFilter.GaussianBlur(n / 300))).astype(np.float64) + rng.normal(0, 4, (n, n))
    return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


NON_ULTRASOUND = {"noise": noise_image, "blank": blank_image, "photo_like": photo_like_image,
                  "chest_xray_like": chest_xray_image}


# --------------------------------------------------------------------------- #
# Synthetic world: tree, cache, tiny mtl model (built once per session)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def world(tiny_world):
    """conftest.tiny_world (shared, read-only): tree, raw-view cache, tiny mtl model; ``good`` its first 5 images."""
    return {**tiny_world, "good": tiny_world["images"][:5]}


@pytest.fixture(scope="session")
def predictor(world):
    return Predictor(world["model"], world["backbone"])


def _run(args):
    return CliRunner().invoke(main, ["predict"] + [str(a) for a in args])


def test_predict_good_images(world, predictor):
    preds = predictor.predict(world["good"])
    assert len(preds) == len(world["good"])
    # the image path (decode, crop, backbone, head) gives what the model gives on the cached features
    fc = FeatureCache(world["cache"])
    rows = [fc.paths.index(str(Path(p).relative_to(world["root"]))) for p in world["good"]]
    expect = predictor.model.predict_features(fc.spatial("raw", rows))["proba"]
    for p, path, e in zip(preds, world["good"], expect):
        assert p.ok and p.error is None and p.path == str(path)
        assert set(p.proba) == set(CLASSES)
        assert np.abs(np.array([p.proba[c] for c in predictor.model.classes]) - e).max() < 1e-3
        assert p.label == predictor.model.classes[int(np.argmax(e))]
        assert p.malignant_threshold == pytest.approx(predictor.model.card.calibration.malignant_threshold)
        assert p.malignant_alert == (p.proba["malignant"] >= p.malignant_threshold)
        assert np.asarray(p.lesion).shape == (7, 7) and 0 <= p.lesion_area <= 1
        w, h = Image.open(path).size
        assert p.size == [w, h]
        if p.lesion_bbox:
            l, t, r, b = p.lesion_bbox
            cl, ct, cr, cb = p.crop_box
            assert cl <= l < r <= cr and ct <= t < b <= cb
        assert set(p.checks) == {"low_confidence", "mismatch", "unusual_input"}
        assert all(p.checks[f.name] == "flagged" for f in p.flags)
        assert all(f.reason for f in p.flags)
        d = p.to_dict()
        json.dumps(d)
        assert d["flags"] == [{"name": f.name, "reason": f.reason} for f in p.flags]
    # the package-level API and threshold override
    again = predict_images(world["good"][:2], model=world["model"], backbone=world["backbone"],
                           threshold_malignant=0.0)
    assert all(p.malignant_alert and p.malignant_threshold == 0.0 for p in again)
    import busi_lite
    assert busi_lite.predict(world["good"][:1], model=world["model"], backbone=world["backbone"])[0].ok


def test_folder_expands_and_skips_masks(world, predictor):
    folder = world["root"] / "benign"
    preds = predictor.predict([folder])
    names = [Path(p.path).name for p in preds]
    assert names and all("_mask" not in n for n in names)
    assert len(names) == len([f for f in folder.iterdir() if "_mask" not in f.stem])


def test_cli_json_and_csv(world):
    args = ["--model", world["model"], "--backbone", world["backbone"]]
    r = _run(world["good"][:3] + ["--json"] + args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [o["path"] for o in out] == [str(p) for p in world["good"][:3]]
    for o in out:
        assert o["ok"] and abs(sum(o["proba"].values()) - 1) < 1e-5 and len(o["lesion"]) == 7
        assert "flags" in o and "malignant_alert" in o and "lesion_bbox" in o and "ood_score" in o
    r = _run(world["good"][:3] + ["--csv"] + args)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3 and all(row["ok"] == "1" for row in rows)
    assert all(abs(sum(float(row[f"p_{c}"]) for c in CLASSES) - 1) < 1e-4 for row in rows)
    r = _run(world["good"][:2] + args)  # human table
    assert r.exit_code == 0 and "lesion map" in r.stdout and str(world["good"][0]) in r.stdout
    r = _run(world["good"][:1] + ["--json", "--csv"] + args)
    assert r.exit_code == 2


def test_input_errors_are_reported_and_others_still_run(world, tmp_path, monkeypatch):
    odd = make_odd_images(tmp_path / "odd")
    good = tmp_path / "good.png"
    shutil.copyfile(world["good"][0], good)
    big = tmp_path / "big.png"
    Image.fromarray(np.full((500, 500), 90, np.uint8)).save(big)
    missing = tmp_path / "missing.png"
    bad = [odd["text_as_png"], odd["truncated_png"], odd["empty_png"], missing, big]
    monkeypatch.setattr("busi_lite.serving.inference.MAX_PIXELS", 200_000)  # big.png (250,000 px) is now a "bomb"; good ones are smaller
    args = ["--model", world["model"], "--backbone", world["backbone"], "--json"]
    r = _run([good] + bad + [world["good"][1]] + args)
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert [o["ok"] for o in out] == [True] + [False] * len(bad) + [True]
    err_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == len(bad)
    for path, line, o in zip(bad, err_lines, out[1:]):
        assert str(path) in line and "->" in line          # names the file and says what to do
        assert str(path) in o["error"]
    assert "not found" in err_lines[3]
    assert "limit" in err_lines[4]
    # human mode too
    r = _run([odd["text_as_png"], good, "--model", world["model"], "--backbone", world["backbone"]])
    assert r.exit_code == 1 and str(odd["text_as_png"]) in r.stderr and "ERROR" not in r.stderr
    assert str(good) in r.stdout


def test_odd_modes_succeed(world, predictor, tmp_path):
    odd = make_odd_images(tmp_path / "odd")
    keys = ["gray16_png", "rgba_png", "palette_png", "la_png", "exif_rot6_jpg", "bmp", "tiff"]
    preds = predictor.predict([odd[k] for k in keys])
    assert all(p.ok for p in preds), [p.error for p in preds]
    exif = preds[keys.index("exif_rot6_jpg")]
    assert exif.size == [160, 240]  # EXIF orientation applied


def test_flag_function_constructed_cases():
    thr = {"low_confidence": 0.6, "lesion_threshold": 0.5, "lesion_absent": 0.3, "lesion_present": 0.7,
           "ood_threshold": 3.0}
    proba = np.array([[0.05, 0.9, 0.05],    # benign, no lesion -> mismatch
                      [0.9, 0.05, 0.05],    # normal, lesion -> mismatch
                      [0.33, 0.34, 0.33],   # flat (benign, with lesion) -> low_confidence
                      [0.05, 0.05, 0.9],    # malignant with lesion, ood high -> unusual_input
                      [0.9, 0.05, 0.05]])   # normal, no lesion -> clean
    lesion = np.zeros((5, 49))
    lesion[1, 24] = lesion[2, 24] = lesion[3, 10] = 0.9
    ood = np.array([1.0, 1.0, 1.0, 5.0, 1.0])
    flags, checks = compute_flags(proba, lesion, ood, CLASSES, thr)
    names = [[f.name for f in fl] for fl in flags]
    assert names == [["mismatch"], ["mismatch"], ["low_confidence"], ["unusual_input"], []]
    assert "no lesion" in flags[0][0].reason and "shows a lesion" in flags[1][0].reason
    assert "0.34" in flags[2][0].reason and "5.00" in flags[3][0].reason
    assert checks[4] == {"low_confidence": "passed", "mismatch": "passed", "unusual_input": "passed"}
    # only clear disagreement counts: a peak between lesion_absent and lesion_present is no mismatch
    lesion_mid = np.full((2, 49), 0.5)
    flags, _ = compute_flags(proba[:2], lesion_mid, ood[:2], CLASSES, thr)
    assert flags == [[], []]
    # plain head: mismatch not applicable; disabled flags are not raised
    flags, checks = compute_flags(proba, None, ood, CLASSES, dict(thr, lesion_threshold=None, lesion_absent=None, lesion_present=None),
                                  FlagConfig(low_confidence=False))
    assert all(c["mismatch"] == "not_applicable" and c["low_confidence"] == "disabled" for c in checks)
    assert [[f.name for f in fl] for fl in flags] == [[], [], [], ["unusual_input"], []]
    # pixel rules add to unusual_input
    flags, _ = compute_flags(proba[:1], None, None, CLASSES, thr, pixel=[["near-constant image"]])
    assert flags[0][-1].name == "unusual_input" and "near-constant" in flags[0][-1].reason


def test_noise_and_blank_flagged_unusual(world, predictor, tmp_path):
    paths = []
    for name, rgb in (("noise", noise_image()), ("blank", blank_image())):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rgb).save(paths[-1])
    for p in predictor.predict(paths):
        assert p.ok and "unusual_input" in [f.name for f in p.flags], (p.path, p.ood_score, p.flags)


def test_threshold_overrides(world):
    strict = Predictor(world["model"], world["backbone"],
                       flags=FlagConfig(low_confidence_threshold=1.0, ood_threshold=0.0, lesion_threshold=0.0),
                       show_anyway=True)
    for p in strict.predict(world["good"][:3]):
        names = [f.name for f in p.flags]
        assert "low_confidence" in names and "unusual_input" in names
        assert ("mismatch" in names) == (p.label == "normal")
    off = Predictor(world["model"], world["backbone"],
                    flags=FlagConfig(low_confidence=False, mismatch=False, unusual_input=False))
    assert all(not p.flags for p in off.predict(world["good"][:3]))


def test_overlays_written_unique_and_inputs_untouched(world, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    src = world["good"][0]
    shutil.copyfile(src, a / "img.png")
    shutil.copyfile(world["good"][1], b / "img.png")
    Image.fromarray(noise_image()).save(a / "img_overlay.png")  # an INPUT with the natural overlay name
    before = {p: p.read_bytes() for p in (a / "img.png", b / "img.png", a / "img_overlay.png")}
    r = _run([a / "img.png", b / "img.png", a / "img_overlay.png", "--overlay", a, "--json",
              "--model", world["model"], "--backbone", world["backbone"]])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    overlays = [Path(o["overlay"]) for o in out]
    assert len(set(overlays)) == 3 and all(p.is_file() for p in overlays)
    assert not set(overlays) & set(before)
    assert all(p.read_bytes() == v for p, v in before.items())
    with Image.open(overlays[0]) as im:
        w, h = Image.open(a / "img.png").size
        # small images are enlarged (longer side 512) so the text stays legible; bands above and below;
        # with a lesion map two panels side by side: the plain image | the image with the map
        k = max(1.0, 512 / max(w, h))
        assert im.mode == "RGB" and im.size[0] == 2 * round(w * k) + 6 and im.size[1] > round(h * k)


def test_lesion_geometry_maps_to_original_pixels():
    g = np.zeros((7, 7))
    g[0, 0] = 1.0  # top-left cell of the centre crop
    area, box = lesion_geometry(g, 700, 350)  # crop: x 175..525, y 0..350
    assert 0 < area < 1 / 49 * 2
    l, t, r, b = box
    assert 175 <= l < r <= 175 + 350 / 7 * 1.5 and 0 <= t < b <= 350 / 7 * 1.5
    assert lesion_geometry(np.zeros((7, 7)), 300, 200) == (0.0, None)


def test_other_backbone_refused(world, tmp_path):
    other = make_tiny_onnx(tmp_path / "other.onnx", seed=1)
    with pytest.raises(ModelError, match="backbone"):
        Predictor(world["model"], other)
    r = _run([world["good"][0], "--model", world["model"], "--backbone", other])
    assert r.exit_code == 2 and "backbone" in r.stderr


def test_evaluate_consistent(world):
    m, fc = Model.load(world["model"]), FeatureCache(world["cache"])
    res = evaluate_flags(m, fc)
    n = len(split_for(fc, m.card.split.seed).test)
    assert res.n == n
    errors = sum(1 for r in res.per_image if r["y"] != r["pred"])
    assert res.n_errors == errors and res.accuracy == pytest.approx(1 - errors / n)
    for name, s in list(res.flags.items()) + [("any", res.any_flag)]:
        if s.active:
            flagged = [r for r in res.per_image if (r["flags"] if name == "any" else name in r["flags"])]
            assert s.n_flagged == len(flagged) and s.n_flagged + s.n_unflagged == n
            # the errors counted among flagged images are the flagged images that are wrong
            assert s.errors_flagged == sum(1 for r in flagged if r["y"] != r["pred"]) <= res.n_errors
    # the record survives its JSON round trip (strict JSON: no NaN)
    text = json.dumps(res.to_json(), allow_nan=False) if not _has_nan(res.to_json()) else None
    back = type(res).from_json(json.loads(dump(res)))
    assert back.n == res.n and back.any_flag.n_flagged == res.any_flag.n_flagged
    assert text is None or json.loads(text)["n"] == n
    r = CliRunner().invoke(main, ["evaluate", "--model", str(world["model"]), "--cache", str(world["cache"]), "--json"])
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout
    assert json.loads(r.stdout, parse_constant=_reject)["n"] == n  # strict JSON: no bare NaN
    r = CliRunner().invoke(main, ["evaluate", "--model", str(world["model"]), "--cache", str(world["cache"])])
    assert r.exit_code == 0 and "ANY FLAG" in r.stdout and "operating point" in r.stdout
    # a model whose split does not match the cache, or another backbone, is refused
    m.card.split = dataclasses.replace(m.card.split, digest="0" * 16)
    with pytest.raises(ModelError, match="split"):
        evaluate_flags(m, fc)
    m.card.backbone_sha256 = "f" * 64
    with pytest.raises(ModelError, match="backbone"):
        evaluate_flags(m, fc)


def _reject(name):
    raise ValueError(f"not JSON: {name}")


def test_unreadable_argument_fails_only_that_file(world, predictor, monkeypatch):
    good = [str(p) for p in world["good"][:2]]
    # a name the OS refuses (embedded NUL), a file whose read fails with EACCES
    denied = world["good"][2]
    real = read_rgb

    def read(path, *a, **k):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)
    monkeypatch.setattr("busi_lite.serving.inference.read_rgb", read)
    # a folder we may not look into (as root, chmod cannot show it: the OS error is simulated)
    locked = Path("locked_dir/scan.png")
    real_is_dir = Path.is_dir

    def is_dir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self)
    monkeypatch.setattr(Path, "is_dir", is_dir)
    preds = predictor.predict([good[0], "bad\0name.png", locked, denied, good[1]])
    assert [p.ok for p in preds] == [True, False, False, False, True]
    assert "cannot be read" in preds[2].error and "Permission denied" in preds[2].error
    assert str(denied) in preds[3].error and "Permission denied" in preds[3].error


def test_non_finite_probabilities_are_an_error_not_a_label(world):
    model = Model.load(world["model"])
    model.head.params["W2"] = np.full_like(model.head.params["W2"], np.nan)   # damaged in memory, not via load
    pr = Predictor(model, world["backbone"])
    preds = pr.predict(world["good"][:3]) + pr.predict_arrays([noise_image()])
    msg = "model produced non-finite probabilities -> the model is damaged; retrain or reinstall it"
    for p in preds:
        assert not p.ok and p.label is None and p.proba is None and p.malignant_alert is None
        assert msg in p.error and p.path in p.error
        json.dumps(p.to_dict(), allow_nan=False)
    # inf is as bad as NaN; a healthy model in the same process still answers
    model.head.params["W2"] = np.full_like(model.head.params["W2"], np.inf)
    assert not any(p.ok for p in Predictor(model, world["backbone"]).predict(world["good"][:1]))
    assert all(p.ok for p in Predictor(world["model"], world["backbone"]).predict(world["good"][:1]))


def test_label_and_screen_read_as_one_answer(world, predictor, tmp_path):
    from busi_lite.serving.verdict import answer_text, screen_text

    p = predictor.predict(world["good"][:1])[0]
    pv = p.model
    assert pv is predictor.provenance and pv.threshold_origin == "training" and len(pv.digest) == 64
    p.withheld, p.label, p.proba = None, "normal", {"normal": 0.74, "benign": 0.23, "malignant": 0.03}
    p.malignant_threshold, p.malignant_alert = 0.028, True
    far = f"{100 * pv.false_alarm_rate:.0f} %"
    assert answer_text(p) == (
        "most probable: normal (p 0.74); sensitive screen: REFER - p(malignant) 0.030 is at or above the screening "
        f"threshold 0.028, set to catch {100 * pv.target_recall:.0f} % of cancers; it also fires on about {far} of "
        "non-malignant cases (the screen is deliberately sensitive: it also refers images whose most probable "
        "class is not malignant)")
    p.proba["malignant"], p.malignant_alert = 0.02799, False   # rounding never makes the comparison read false
    assert "p(malignant) 0.02799 is below the screening threshold 0.02800" in screen_text(p)
    r = _run(world["good"][:1] + ["--model", world["model"], "--backbone", world["backbone"], "--show-anyway"])
    assert r.exit_code == 0
    assert "most probable: " in r.stdout and "sensitive screen: " in r.stdout and "label:" not in r.stdout
    assert f"model {pv.name} (digest {pv.digest[:12]})" in r.stdout     # every result names its model
    assert "chosen on out-of-fold predictions of the" in r.stdout
    using = [ln for ln in r.stderr.splitlines() if ln.startswith("using model")]
    assert len(using) == 1 and str(world["model"]) in using[0] and pv.digest[:12] in using[0]
    assert str(world["backbone"]) in using[0]


def test_serving_imports_no_training():
    import ast
    import subprocess
    import sys

    code = ("import sys, busi_lite.serving.inference, busi_lite.serving.flags, busi_lite.serving.overlay; "
            "print(sorted(m for m in sys.modules if m.startswith('busi_lite')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out))
    banned = ("busi_lite.training", "busi_lite.cli", "busi_lite.report", "busi_lite.heads.base",
              "busi_lite.evaluation.metrics")
    assert not {m for m in loaded if m.startswith(banned)}, out
    assert "'busi_lite.serving.inference'" in out


def _has_nan(x) -> bool:
    if isinstance(x, dict):
        return any(_has_nan(v) for v in x.values())
    if isinstance(x, list):
        return any(_has_nan(v) for v in x)
    return isinstance(x, float) and x != x


# --------------------------------------------------------------------------- #
# Real assets
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def real_world(real_data, real_backbone, real_cache):
    fc = FeatureCache(real_cache[0])  # the session's real cache (conftest.py); only its raw view is used
    # few epochs keep it quick: the checks below concern the image path and the OOD score, not accuracy
    model, _ = fit_model(fc, Config.build(name="real-plain", epochs=10), seed=0)
    return {"cache": fc, "model": model, "predictor": Predictor(model, real_backbone), "root": real_data}


def test_real_image_path_matches_cache(real_world):
    fc, model, pr = real_world["cache"], real_world["model"], real_world["predictor"]
    test = split_for(fc, 0).test
    rows = np.concatenate([test[fc.labels[test] == c][:2] for c in range(3)])
    expect = model.predict_features(fc.spatial("raw", rows))["proba"]
    preds = pr.predict([Path(real_world["root"]) / fc.paths[i] for i in rows])
    got = np.array([[p.proba[c] for c in model.classes] for p in preds])
    assert np.abs(got - expect).max() < 1e-3
    assert not any(f.name == "unusual_input" and "coloured" in f.reason for p in preds for f in p.flags)


def test_real_non_ultrasound_flagged_unusual(real_world):
    pr = real_world["predictor"]
    names = list(NON_ULTRASOUND)
    preds = pr.predict_arrays([NON_ULTRASOUND[k]() for k in names], names)
    thr = pr.thresholds["ood_threshold"]
    for name, p in zip(names, preds):
        assert "unusual_input" in [f.name for f in p.flags], (name, p.ood_score, thr)
        assert p.ood_score > thr, (name, p.ood_score, thr)  # the OOD score alone catches them
        assert p.withheld and p.label is None and p.malignant_alert is None, name   # no verdict for them


def test_predict_csv_never_holds_a_formula(world, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("http:evil","click").png'
    shutil.copy(world["good"][0], tmp_path / name)
    r = _run([name, "--csv", "--model", world["model"], "--backbone", world["backbone"]])
    assert r.exit_code == 0, r.output
    row = next(csv.DictReader(io.StringIO(r.stdout)))
    assert row["path"] == "'" + name and row["ok"] == "1"


def test_predict_json_to_a_full_disk_is_one_line(world):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "busi_lite.cli", "predict", str(world["good"][0]), "--json",
           "--model", str(world["model"]), "--backbone", str(world["backbone"])]
    with open("/dev/full", "w") as full:
        r = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("error: standard output: disk full while writing the results "
                                                 "-> free some space, or write them elsewhere")
