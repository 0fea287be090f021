"""The web server's limits: decoded pixels per request, file-by-file decoding, Host and Origin
rules, slow uploads, client disconnects."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("multipart")
from starlette.testclient import TestClient  # noqa: E402

from busi_lite.serving.inference import Predictor
from busi_lite.web import app as web
from busi_lite.web.app import create_app

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def predictor(tiny_world):
    return Predictor(tiny_world["model"], tiny_world["backbone"])  # conftest.py: shared, read-only


def png(h, w, value=90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def post(c, *files, headers=None):
    return c.post("/api/predict", files=[("files", (n, b, "application/octet-stream")) for n, b in files],
                  headers=headers or {})


class Counting:
    """Wraps a Predictor; records how many frames each predict_arrays call held."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_arrays(self, rgbs, names=None, boxes=None):
        self.calls.append(len(rgbs))
        return self.real.predict_arrays(rgbs, names=names)


def test_decoded_pixels_per_request_are_limited_and_files_are_predicted_one_at_a_time(predictor):
    spy = Counting(predictor)
    # budget 1 Mpixel: three 600x600 (0.36 Mpixel) flat PNGs of a few KB each
    c = TestClient(create_app(spy, max_request_mpixels=1.0), raise_server_exceptions=False, base_url=LOCAL)
    blob = png(600, 600)
    assert len(blob) < 10_000
    r = post(c, ("a.png", blob), ("b.png", blob), ("c.png", blob))
    assert r.status_code == 200
    recs = r.json()
    assert [x["ok"] for x in recs] == [True, True, False]
    assert "c.png" in recs[2]["error"] and "1 Mpixel limit per request" in recs[2]["error"]
    assert spy.calls == [1, 1]                       # decoded and predicted file by file, c.png never
    r = post(c, ("huge.png", png(1200, 1000)))        # 1.2 Mpixels alone: 413 naming it
    assert r.status_code == 413 and r.json()["file"] == "huge.png" and "Mpixel" in r.json()["error"]
    assert c.get("/api/info").json()["limits"]["max_request_mpixels"] == 1.0


def test_foreign_host_is_refused_and_loopback_names_answer(predictor):
    app = create_app(predictor)
    assert TestClient(app, base_url="http://evil.example:8000").get("/api/info").status_code == 400
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert TestClient(app, base_url=LOCAL).get("/api/info", headers={"host": host}).status_code == 200, host
    wide = create_app(predictor, allowed_hosts=("scanner-pc", "127.0.0.1"))
    assert TestClient(wide, base_url="http://scanner-pc:8000").get("/api/info").status_code == 200


def test_cross_origin_post_is_refused_and_same_origin_answers(predictor):
    c = TestClient(create_app(predictor), raise_server_exceptions=False, base_url="http://127.0.0.1:8000")
    blob = png(64, 64)
    r = post(c, ("a.png", blob), headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    assert post(c, ("a.png", blob), headers={"origin": "null"}).status_code == 403
    assert post(c, ("a.png", blob), headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert post(c, ("a.png", blob), headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
    assert post(c, ("a.png", blob)).status_code == 200             # curl / scripts send no Origin
    assert c.get("/api/info", headers={"origin": "http://evil.example"}).status_code == 200   # reads: Host rule


def test_slow_upload_is_408_and_a_disconnect_is_one_log_line(predictor, monkeypatch, caplog):
    import asyncio

    monkeypatch.setattr(web, "BODY_IDLE_S", 0.2)
    app = create_app(predictor)

    def call(receive):
        sent = []

        async def send(m):
            sent.append(m)

        scope = {"type": "http", "method": "POST", "path": "/api/predict", "raw_path": b"/api/predict",
                 "query_string": b"", "root_path": "", "scheme": "http", "server": ("127.0.0.1", 8000),
                 "client": ("127.0.0.1", 5555), "http_version": "1.1",
                 "headers": [(b"host", b"127.0.0.1:8000"),
                             (b"content-type", b"multipart/form-data; boundary=xyz")]}
        asyncio.run(app(scope, receive, send))
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    async def trickle():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"x", "more_body": True}

    assert call(trickle) == 408

    async def gone():
        return {"type": "http.disconnect"}

    caplog.set_level(logging.INFO, "busi_lite.web")
    assert call(gone) == 400
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)       # one line, no traceback


def test_errors_name_the_upload_never_a_stream_object(predictor):
    c = TestClient(create_app(predictor), raise_server_exceptions=False, base_url=LOCAL)
    for blob in (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, b"\xff\xd8\xff" + b"junk" * 10, b"BM" + b"\1" * 60):
        r = post(c, ("scan.img", blob))
        assert r.status_code == 400 and r.json()["file"] == "scan.img"
        assert "BytesIO" not in r.text and " at 0x" not in r.text, r.text
