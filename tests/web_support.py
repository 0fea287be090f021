"""Helpers shared by tests/test_web.py, tests/test_browser.py and benchmarks/bench_web.py.

* :func:`tiny_model` trains a small multi-task model (with a lesion map) on a synthetic
  BUSI-like tree and the tiny ONNX backbone, as tests/test_predict.py does.
* :func:`dicom_bytes` wraps an RGB/grey image in a minimal ultrasound DICOM (optional region,
  fake patient name) with pydicom.
* :func:`running_server` runs uvicorn on a free 127.0.0.1 port in a thread.
* :func:`browser_page` (a fresh context of one shared Chromium), :func:`upload`, :func:`read_card`, :func:`draw_box` drive headless
  Chromium (Playwright); :func:`drive_page` combines them: upload, wait for the verdict, read
  what the page shows, draw a box, take a screenshot, return the page's timings.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FAKE_NAME = "Doe^Jane-Secret"


def tiny_model(base: Path, backbone: Path) -> Path:
    """Train a tiny mtl model under ``base``; returns its stem."""
    from synth import make_busi_tree

    from busi_lite.features.cache import FeatureCache, extract
    from busi_lite.model.config import Config
    from busi_lite.training.experiments import fit_model

    root = base / "busi"
    info = make_busi_tree(root, seed=0)
    cache = base / "cache.h5"
    extract(root, cache, backbone, views=(), log=lambda m: None, progress=False)  # the model reads raw only
    model, _ = fit_model(FeatureCache(cache), Config.build(name="tiny-mtl", epochs=30, head="mtl", hidden=16,
                                                     lr=1e-3, batch=8), seed=0)
    stem = base / "tiny_mtl"
    model.save(stem)
    (base / "images.txt").write_text("\n".join(str(root / p) for p in info["images"]))
    return stem


def synth_images(base: Path) -> list[Path]:
    """The synthetic tree's images written by :func:`tiny_model`."""
    return [Path(p) for p in (base / "images.txt").read_text().splitlines()]


def held_out_images(model: Path, data: Path) -> list[Path]:
    """A saved model's held-out test images (paths from its card), malignant first."""
    card = json.loads(model.with_name(model.name + ".json").read_text())
    rel = card["test_predictions"]["path"]
    order = sorted(range(len(rel)), key=lambda i: (not rel[i].startswith("malignant/"), i))
    return [data / rel[i] for i in order]


def dicom_bytes(rgb: np.ndarray, region=None, name: str = FAKE_NAME, grey: bool = True,
                uid: str = "1.2.826.0.1.3680043.8.498.1") -> bytes:
    """A minimal single-frame ultrasound DICOM of ``rgb`` [H,W,3] uint8.

    grey: store the first channel as MONOCHROME2 (the image must be grey), else RGB.
    region: (x0, y0, x1, y1) half-open -> SequenceOfUltrasoundRegions with one 2D region.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"   # US Image Storage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.Modality = "US"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, "ID-12345-SECRET", "19700101"
    h, w = rgb.shape[:2]
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if grey:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(rgb[..., 0]).tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    if region is not None:
        r = Dataset()
        r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
        r.RegionLocationMinX0, r.RegionLocationMinY0 = region[0], region[1]
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = region[2] - 1, region[3] - 1   # inclusive in DICOM
        ds.SequenceOfUltrasoundRegions = Sequence([r])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    while not server.started:
        if time.perf_counter() - t0 > 20 or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


_SHARED: dict = {}   # one Playwright + Chromium per process, launched on first use (close_browser ends it)


def shared_browser():
    """The process's headless Chromium (launched once: a launch costs about a second)."""
    if "browser" not in _SHARED:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        try:
            _SHARED["browser"] = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        except BaseException:
            pw.stop()
            raise
        _SHARED["pw"] = pw
    return _SHARED["browser"]


def close_browser() -> None:
    """Close the shared Chromium and Playwright, if they were started (tests/conftest.py, at session end)."""
    browser, pw = _SHARED.pop("browser", None), _SHARED.pop("pw", None)
    if browser is not None:
        browser.close()
    if pw is not None:
        pw.stop()


@contextlib.contextmanager
def browser_page(url: str, viewport=(1280, 800)):
    """A page of the shared headless Chromium on ``url``/ with model info loaded, in a fresh browser
    context (its own cookies, storage and cache: nothing carries over from another test); yields
    (page, console errors list). Any request to another origin than ``url`` (a CDN, a font...) is
    recorded as a console error."""
    console = []
    context = shared_browser().new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        page = context.new_page()
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith((url + "/", "data:", "blob:"))
                else console.append(f"request to another origin: {r.url}"))
        page.goto(url + "/")
        # predicates as functions: the page's CSP forbids eval'd strings
        page.wait_for_function("() => document.getElementById('model-info').textContent.startsWith('model')")
        yield page, console
    finally:
        context.close()


def upload(page, files, timeout_ms: float = 60000) -> float:
    """Pick ``files`` in the page's file input; wait until all are shown.
    Returns the page's own upload-to-verdict time (ms, performance.now)."""
    done = int(page.evaluate("() => Number(document.body.dataset.done || 0)"))
    n = int(page.evaluate("() => window.busiTimings.length"))
    page.set_input_files("#file-input", [str(f) for f in files])
    page.wait_for_function(f"() => Number(document.body.dataset.done || 0) > {done}", timeout=timeout_ms)
    ms = page.evaluate(f"() => window.busiTimings.length > {n} ? window.busiTimings[{n}].ms : null")
    if ms is None:
        raise RuntimeError(f"no verdict timing after uploading {files}: "
                           + page.locator("#status").inner_text())
    return float(ms)


def read_card(card) -> dict:
    """What one result card shows ("" for a part it does not show)."""
    def text(sel):
        loc = card.locator(sel)
        return loc.first.inner_text() if loc.count() else ""

    return {
        "file": card.get_attribute("data-file"),
        "verdict": text(".verdict"),
        "alert": text(".alert"),
        "withheld": text(".withheld"),
        "provenance": text(".provenance"),
        "proba": {el.get_attribute("data-class"): el.inner_text() for el in card.locator(".pct").all()},
        "flags": [el.get_attribute("data-flag") for el in card.locator(".flags li[data-flag]").all()],
        "flag_text": card.locator(".flags").inner_text(),
        "meta": card.locator(".meta").inner_text(),
        "has_legend": card.locator(".legend").count() > 0,
    }


def draw_box(page, card, box_fraction=(0.3, 0.3, 0.6, 0.6)) -> dict:
    """Drag a box with the mouse on ``card``'s image; wait for the new result; return the card's notes/meta."""
    canvas = card.locator("canvas.image")
    page.wait_for_function("() => document.querySelector('.card canvas.image').width > 10")
    canvas.scroll_into_view_if_needed()
    bb = canvas.bounding_box()
    x0, y0 = bb["x"] + box_fraction[0] * bb["width"], bb["y"] + box_fraction[1] * bb["height"]
    x1, y1 = bb["x"] + box_fraction[2] * bb["width"], bb["y"] + box_fraction[3] * bb["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('predicted again')")
    note = card.locator(".notes")
    return {"note": note.inner_text() if note.count() else None, "meta": card.locator(".meta").inner_text()}


def drive_page(url: str, files: list[Path], shots: list[Path], repeats: int = 1,
               viewport=(1280, 800), full_page: bool = False) -> dict:
    """Open the page, upload ``files`` ``repeats`` times (timing each), read the first card,
    draw a lesion box on it, screenshot to every path in ``shots``.

    Returns {"timings_ms", "shown" (first card), "box_note", "box_meta", "console_errors", "cards", "csv"}.
    """
    with browser_page(url, viewport) as (page, console):
        timings = []
        for r in range(repeats):
            if r:
                page.click("#clear")
            timings.append(upload(page, files))
        card = page.locator(".card").first   # the newest upload is on top, its files in order
        shown = read_card(card)
        box = draw_box(page, card)
        page.evaluate("() => window.scrollTo(0, 0)")
        for s in shots:
            Path(s).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(s), full_page=full_page)
        csv = page.evaluate("() => window.busiCsv()")
        n_cards = page.locator(".card").count()
    return {"timings_ms": timings, "shown": shown, "box_note": box["note"], "box_meta": box["meta"],
            "console_errors": console, "cards": n_cards, "csv": csv}
