"""busi-lite serve: the JSON API in-process (Starlette's TestClient), on a tiny model; one real-asset check."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("multipart")
from starlette.testclient import TestClient  # noqa: E402
from web_support import FAKE_NAME, dicom_bytes  # noqa: E402

from busi_lite.common.errors import ConfigError
from busi_lite.io.imread import read_rgb
from busi_lite.serving.inference import NO_BOX_NOTE, Predictor
from busi_lite.web.app import STATIC_DIR, create_app

LOCAL = "http://127.0.0.1"   # the app answers only its own host names
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", ".py\", line")


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world  # conftest.py: the shared read-only tiny mtl model, its backbone and images


@pytest.fixture(scope="module")
def predictor(world):
    return Predictor(world["model"], world["backbone"])


@pytest.fixture(scope="module")
def client(predictor, world):
    app = create_app(predictor, model_path=str(world["model"]), max_file_mb=2, max_request_mb=5)
    return TestClient(app, raise_server_exceptions=False, base_url=LOCAL)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def post(client, *files, **data):
    return client.post("/api/predict", files=[("files", (n, b, "application/octet-stream")) for n, b in files],
                       data=data)


def assert_clean_error(r, status, file=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert " -> " in body["error"]
    if file is not None:
        assert body["file"] == file and file in body["error"]
    for marker in TRACE_MARKERS:
        assert marker not in r.text, f"{marker!r} leaked into an error response: {r.text[:300]}"


def assert_same_record(web: dict, cli: dict):
    assert web["ok"] and cli["ok"]
    for k in ("label", "malignant_alert", "malignant_threshold", "size", "crop_box", "checks", "flags", "withheld"):
        assert web[k] == cli[k], k
    assert web["model"] == dict(cli["model"], path=Path(cli["model"]["path"]).name)   # the page shows no absolute path
    if cli["withheld"]:
        assert web["proba"] is None and web["lesion"] is None
        return
    assert set(web["proba"]) == set(cli["proba"])
    for c in cli["proba"]:
        assert web["proba"][c] == pytest.approx(cli["proba"][c], abs=1e-6)
    assert np.allclose(web["lesion"], cli["lesion"], atol=1e-4)
    assert web["ood_score"] == pytest.approx(cli["ood_score"], rel=1e-5)


# --------------------------------------------------------------------------- good inputs
def test_info_names_model_backbone_and_thresholds(client, predictor, world):
    info = client.get("/api/info").json()
    assert info["model"]["name"] == "tiny-mtl" and info["model"]["file"] == Path(world["model"]).name
    assert info["model"]["sha256"] == predictor.model_sha256
    assert str(Path(world["model"]).parent) not in json.dumps(info)      # no absolute path to any client
    assert info["model"]["has_lesion_map"] is True
    assert info["backbone"] == {"file": Path(world["backbone"]).name, "sha256": predictor.backbone.sha256}
    assert info["classes"] == ["normal", "benign", "malignant"]
    assert info["malignant_threshold"] == pytest.approx(predictor.malignant_threshold)
    assert info["limits"]["max_file_mb"] == 2 and info["limits"]["max_request_mb"] == 5
    assert "not" in info["notice"] and "diagnosis" in info["notice"]
    pv = predictor.provenance   # name, whole-model digest and the threshold's origin, as every record has them
    assert info["provenance"] == dict(pv.to_dict(), path="tiny_mtl") and len(pv.digest) == 64   # no absolute path
    assert info["provenance"]["threshold_source"].startswith("chosen on out-of-fold predictions")


def test_good_image_gives_the_predict_json_record(client, predictor, world):
    path = world["images"][-1]
    r = post(client, ("scan.png", path.read_bytes()))
    assert r.status_code == 200, r.text
    (rec,) = r.json()
    assert rec["path"] == "scan.png" and "preview" not in rec
    cli = predictor.predict([path])[0].to_dict()
    assert set(cli) <= set(rec)                       # every field of predict --json is there
    assert_same_record(rec, cli)
    assert len(rec["lesion"]) == 7 and all(len(row) == 7 for row in rec["lesion"])
    assert rec["model"] == dict(predictor.provenance.to_dict(), path=Path(str(predictor.provenance.path)).name)
    assert rec["withheld"] is None


def test_unusual_input_gets_no_verdict_unless_shown_anyway(client):
    rng = np.random.default_rng(0)
    photo = np.zeros((200, 240, 3), np.uint8)      # a strongly coloured picture: not a B-mode scan
    photo[..., 0] = rng.integers(150, 255, (200, 240))
    photo[..., 1] = rng.integers(0, 80, (200, 240))
    (rec,) = post(client, ("photo.png", png_bytes(photo))).json()
    assert rec["ok"] and "unusual_input" in [f["name"] for f in rec["flags"]]
    assert rec["label"] is None and rec["proba"] is None and rec["malignant_alert"] is None
    assert rec["withheld"].startswith("unusual input: ") and rec["model"]["digest"]
    (anyway,) = post(client, ("photo.png", png_bytes(photo)), show_anyway="1").json()
    assert anyway["label"] in anyway["proba"] and anyway["withheld"] is None
    assert any("shown anyway" in n for n in anyway["notes"])


def test_multiple_files_keep_their_order_and_preview_is_a_jpeg(client, world):
    paths = world["images"][:3]
    r = post(client, *[(f"f{i}.png", p.read_bytes()) for i, p in enumerate(paths)], preview="1")
    assert r.status_code == 200
    recs = r.json()
    assert [x["path"] for x in recs] == ["f0.png", "f1.png", "f2.png"]
    assert all(x["ok"] for x in recs)
    assert recs[0]["preview"].startswith("data:image/jpeg;base64,")


def test_mixed_batch_reports_the_bad_file_and_predicts_the_rest(client, world):
    good = world["images"][0].read_bytes()
    r = post(client, ("good.png", good), ("notes.txt", b"not an image at all" * 20), ("good2.png", good))
    assert r.status_code == 200
    recs = r.json()
    assert [x["path"] for x in recs] == ["good.png", "notes.txt", "good2.png"]
    assert [x["ok"] for x in recs] == [True, False, True]
    assert "notes.txt" in recs[1]["error"] and "not an image" in recs[1]["error"]


def test_client_folders_are_dropped_from_names(client, world):
    r = post(client, ("../../etc/x\\y/scan one.png", world["images"][0].read_bytes()))
    assert r.json()[0]["path"] == "scan one.png"


# --------------------------------------------------------------------------- bad inputs
def test_wrong_type_is_415_naming_the_file(client):
    r = post(client, ("report.pdf", b"%PDF-1.4 not an image" * 10))
    assert_clean_error(r, 415, "report.pdf")
    r = client.post("/api/predict", content=b'{"a": 1}', headers={"content-type": "application/json"})
    assert_clean_error(r, 415)


def test_broken_image_is_400_naming_the_file(client, world):
    blob = world["images"][0].read_bytes()
    r = post(client, ("cut.png", blob[: len(blob) // 3]))
    assert_clean_error(r, 400, "cut.png")
    r = post(client, ("fake.jpg", b"\xff\xd8\xff" + b"\x00" * 300))
    assert_clean_error(r, 400, "fake.jpg")


def test_broken_dicom_is_400_naming_the_file(client):
    pytest.importorskip("pydicom")
    r = post(client, ("cut.dcm", dicom_bytes(np.full((64, 64, 3), 90, np.uint8))[:200]))
    assert_clean_error(r, 400, "cut.dcm")
    assert FAKE_NAME not in r.text


def test_too_big_file_and_request_are_413(client):
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8))
    assert 2 * 2**20 < len(big) < 5 * 2**20
    assert_clean_error(post(client, ("huge.png", big)), 413, "huge.png")
    r = post(client, *[(f"p{i}.png", big[: 2 * 2**20 - 10]) for i in range(3)])   # each under 2 MB, 6 MB in all
    assert_clean_error(r, 413)
    assert "5 MB" in r.json()["error"]


def test_empty_and_malformed_forms_are_400(client):
    r = client.post("/api/predict", data={"box": "1,2,3,4"})
    assert r.status_code in (400, 415)
    assert_clean_error(r, r.status_code)
    r = client.post("/api/predict", content=b"--xx\r\ngarbage", headers={"content-type": "multipart/form-data"})
    assert_clean_error(r, 400)


def test_internal_error_is_json_without_traceback(world):
    class Exploding:
        def __init__(self, real):
            self.model, self.backbone = real.model, real.backbone
            self.malignant_threshold, self.thresholds = real.malignant_threshold, real.thresholds

        def predict_arrays(self, rgbs, names=None):
            raise RuntimeError("secret internal state /opt/x.py")

    app = create_app(Exploding(Predictor(world["model"], world["backbone"])))
    c = TestClient(app, raise_server_exceptions=False, base_url=LOCAL)
    r = post(c, ("a.png", world["images"][0].read_bytes()))
    assert_clean_error(r, 500)
    assert "secret" not in r.text and "RuntimeError" not in r.text
    r = c.get("/no/such/page")
    assert r.status_code == 404 and r.json()["error"]


# --------------------------------------------------------------------------- box
def test_box_is_ignored_with_a_note_when_the_model_has_no_box_mode(client, world):
    path = world["images"][0]
    w, h = Image.open(path).size
    r = post(client, ("a.png", path.read_bytes()), box=f"10,12,{w // 2},{h // 2}")
    assert r.status_code == 200
    (rec,) = r.json()
    assert rec["box"] == [10, 12, w // 2, h // 2] and rec["notes"] == [NO_BOX_NOTE]
    plain = post(client, ("a.png", path.read_bytes())).json()[0]
    assert rec["proba"] == plain["proba"] and not plain.get("notes")
    assert_clean_error(post(client, ("a.png", path.read_bytes()), box="1,2,three,4"), 400)
    assert_clean_error(post(client, ("a.png", path.read_bytes()), box=f"{w + 5},{h + 5},{w + 50},{h + 50}"), 400)
    two = post(client, ("a.png", path.read_bytes()), ("b.png", path.read_bytes()), box="1,1,20,20")
    assert_clean_error(two, 400)


def test_box_goes_to_a_model_with_a_box_mode(world):
    class WithBox(Predictor):
        supports_box = True
        seen = []

        def predict_arrays(self, rgbs, names=None, boxes=None):
            self.seen.append(boxes)
            return super().predict_arrays(rgbs, names=names)

    c = TestClient(create_app(WithBox(world["model"], world["backbone"])), raise_server_exceptions=False, base_url=LOCAL)
    assert c.get("/api/info").json()["model"]["supports_box"] is True
    r = post(c, ("a.png", world["images"][0].read_bytes()), box="5,6,40,50")
    assert r.status_code == 200 and WithBox.seen == [[(5, 6, 40, 50)]]
    assert "notes" not in r.json()[0] or NO_BOX_NOTE not in r.json()[0]["notes"]


# --------------------------------------------------------------------------- DICOM
def test_dicom_wrap_equals_png_and_leaks_no_patient_name(client, predictor, world):
    pytest.importorskip("pydicom")
    pytest.importorskip("busi_lite.io.dicom")
    path = world["images"][1]
    rgb = read_rgb(path)
    assert (rgb[..., 0] == rgb[..., 2]).all()               # grey: MONOCHROME2 holds it exactly
    h, w = rgb.shape[:2]
    framed = np.zeros((h + 60, w + 40, 3), np.uint8)        # scanner menu around the image
    framed[30:30 + h, 20:20 + w] = rgb
    framed[:20, :] = 255
    blob = dicom_bytes(framed, region=(20, 30, 20 + w, 30 + h))
    r = post(client, ("study.dcm", blob), preview="1")
    assert r.status_code == 200, r.text
    (rec,) = r.json()
    assert rec["frame"] == 0 and rec["n_frames"] == 1 and rec["sop_instance_uid"]
    assert rec["dicom_crop"] == [20, 30, 20 + w, 30 + h]
    assert_same_record(rec, predictor.predict([path])[0].to_dict())
    for secret in (FAKE_NAME, "Doe", "ID-12345-SECRET", "19700101"):
        assert secret not in r.text
    r = post(client, ("noext", blob))                       # recognised by the DICM preamble
    assert r.status_code == 200 and r.json()[0]["path"] == "noext"


def test_dicom_cine_gives_one_record_per_frame(predictor):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("busi_lite.io.dicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm")
    if path is None:
        pytest.skip("pydicom's examples_ybr_color.dcm is not installed")
    c = TestClient(create_app(predictor, max_file_mb=20), raise_server_exceptions=False, base_url=LOCAL)
    r = post(c, ("cine.dcm", Path(path).read_bytes()))
    assert r.status_code == 200, r.text
    recs = r.json()
    n = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
    assert [x["frame"] for x in recs] == list(range(n)) and all(x["n_frames"] == n for x in recs)
    assert all(x["ok"] and x["path"] == "cine.dcm" for x in recs)


# --------------------------------------------------------------------------- the rest
def test_openapi_is_served_and_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    post_op = spec["paths"]["/api/predict"]["post"]
    assert {"200", "400", "413", "415"} <= set(post_op["responses"])
    props = post_op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"files", "box", "preview"} <= set(props)
    assert "/api/info" in spec["paths"]
    record = spec["components"]["schemas"]["Prediction"]["properties"]
    assert {"proba", "label", "malignant_alert", "flags", "lesion", "crop_box"} <= set(record)


def test_page_and_assets_are_local_and_headers_safe(client):
    r = client.get("/")
    assert r.status_code == 200 and "not a diagnosis" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), f"{f.name} loads a remote asset"
        assert "@import" not in text and "url(http" not in text
        assert client.get(f"/static/{f.name}").status_code == 200


def test_uploads_stay_in_memory(client, monkeypatch):
    import tempfile

    import starlette.formparsers as fp

    class NoDisk(tempfile.SpooledTemporaryFile):
        def rollover(self):
            raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(fp, "SpooledTemporaryFile", NoDisk)
    blob = png_bytes(np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8))
    assert len(blob) > 1024 * 1024                         # above Starlette's default spool size
    r = post(client, ("big.png", blob))
    assert r.status_code == 200, r.text


def test_nothing_is_saved_unless_save_dir(predictor, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = TestClient(create_app(predictor), raise_server_exceptions=False, base_url=LOCAL)
    assert post(c, ("a.png", world["images"][0].read_bytes())).status_code == 200
    assert list(tmp_path.iterdir()) == []
    keep = tmp_path / "kept"
    c = TestClient(create_app(predictor, save_dir=keep), raise_server_exceptions=False, base_url=LOCAL)
    assert post(c, ("a b.png", world["images"][0].read_bytes())).status_code == 200
    saved = sorted(p.name for p in keep.iterdir())
    assert len(saved) == 2 and saved[0].endswith("a_b.png") and saved[1].endswith("a_b.png.json")
    assert json.loads((keep / saved[1]).read_text())[0]["path"] == "a b.png"


def test_limits_are_validated(predictor):
    with pytest.raises(ConfigError, match="max_file_mb"):
        create_app(predictor, max_file_mb=0)
    with pytest.raises(ConfigError, match="max_request_mb"):
        create_app(predictor, max_file_mb=10, max_request_mb=5)


# --------------------------------------------------------------------------- real assets
@pytest.mark.real
def test_real_model_on_a_busi_image(real_data, real_backbone):
    model = Path(__file__).resolve().parents[1] / "weights" / "busi_lite_default"
    pred = Predictor(model, real_backbone)
    c = TestClient(create_app(pred), raise_server_exceptions=False, base_url=LOCAL)
    path = real_data / "malignant" / "malignant (1).png"
    r = post(c, (path.name, path.read_bytes()))
    assert r.status_code == 200, r.text
    rec, cli = r.json()[0], pred.predict([path])[0].to_dict()
    for k in ("label", "malignant_alert", "flags", "size", "crop_box"):
        assert rec[k] == cli[k]
    for k in cli["proba"]:
        assert rec["proba"][k] == pytest.approx(cli["proba"][k], abs=1e-6)


# --------------------------------------------------------------------------- serve()
def test_serve_loads_once_prints_the_url_and_answers(world):
    import subprocess
    import sys
    import urllib.request

    pytest.importorskip("uvicorn")
    from web_support import free_port

    port = free_port()
    code = ("from busi_lite.web.app import serve; "
            f"serve(port={port}, model={str(world['model'])!r}, backbone={str(world['backbone'])!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "serving http" in line:
                break
        assert f"serving http://127.0.0.1:{port}/" in "".join(lines), "".join(lines)
        assert "not a diagnosis" in "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=20) as r:
            assert json.load(r)["model"]["name"] == "tiny-mtl"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_serve_validates_its_parameters_and_refuses_a_busy_port(world):
    import socket

    from busi_lite.common.errors import BusiError
    from busi_lite.web.app import serve

    with pytest.raises(ConfigError, match="port"):
        serve(port=70000)
    with pytest.raises(ConfigError, match="max_file_mb"):
        serve(max_file_mb=-1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(BusiError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(port=port, model=world["model"], backbone=world["backbone"], echo=lambda m: None)


def test_dicom_upload_is_decoded_from_memory_and_stale_copies_are_removed(client, monkeypatch, tmp_path):
    pytest.importorskip("pydicom")
    import os
    import tempfile

    from busi_lite.web import uploads

    def no_disk(*a, **k):
        raise AssertionError("a DICOM upload must not be written to disk")

    monkeypatch.setattr(tempfile, "mkstemp", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    blob = dicom_bytes(np.full((64, 80, 3), 90, np.uint8))
    assert post(client, ("ok.dcm", blob)).status_code == 200
    r = post(client, ("cut.dcm", blob[:-40]))
    assert r.status_code == 400 and r.json()["error"].startswith("cut.dcm: ")
    # copies an older, killed server left behind are removed at start; other files are not
    (tmp_path / "busi-lite-abc123.dcm").write_bytes(blob)
    (tmp_path / "other.dcm").write_bytes(blob)
    assert uploads.remove_stale_copies(str(tmp_path)) == ["busi-lite-abc123.dcm"]
    assert sorted(os.listdir(tmp_path)) == ["other.dcm"]


def test_server_log_names_client_status_and_refusals(client, world, caplog):
    import logging

    from busi_lite.web.serverlog import reachable_urls

    with caplog.at_level(logging.INFO, logger="busi_lite.web"):
        post(client, ("a.png", world["images"][0].read_bytes()))
        post(client, ("notes.txt", b"not an image\n" * 10))
        post(client, ("big.png", b"\0" * (3 * 1024 * 1024)))             # over the 2 MB per-file limit
        post(client, ("a.png", world["images"][0].read_bytes()), ("notes.txt", b"not an image\n" * 10))
    lines = [r.getMessage() for r in caplog.records if r.name == "busi_lite.web"]
    assert len(lines) == 4 and all(ln.startswith("client testclient:") and "POST /api/predict -> " in ln
                                   for ln in lines), lines
    assert "-> 200: 1 image(s)/frame(s) predicted" in lines[0]
    assert "-> 415: notes.txt" in lines[1] and "-> 413: big.png" in lines[2]
    assert "1 image(s)/frame(s) predicted" in lines[3] and "1 file(s) refused" in lines[3]   # never counted as predicted
    urls = reachable_urls("0.0.0.0", 8123)
    assert urls[-1] == "http://127.0.0.1:8123/" and not any("0.0.0.0" in u for u in urls)
    assert reachable_urls("127.0.0.1", 8123) == ["http://127.0.0.1:8123/"]
