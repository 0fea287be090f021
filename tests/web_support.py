"""Helpers shared by tests/test_web.py, tests/test_browser.py and benchmarks/bench_web.py.

* :func:`tiny_model` trains a small multi-task model (with a lesion map) on a synthetic
  BUSI-like tree and the tiny ONNX backbone, as tests/test_predict.py does.
* :func:`dicom_bytes` wraps an RGB/grey image in a minimal ultrasound DICOM (optional region,
  fake patient name) with pydicom.
* :func:`running_server` runs uvicorn on a free 127.0.0.1 port in a thread.
* :func:`drive_page` uploads files in headless Chromium (Playwright), waits for the verdict,
  reads what the page shows, draws a box, takes a screenshot, returns timings.
"""

from __future__ import annotations

import contextlib
import io
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
    from busi_lite.experiments import Config, fit_model
    from busi_lite.features import FeatureCache, extract
    from synth import make_busi_tree

    root = base / "busi"
    info = make_busi_tree(root, seed=0)
    cache = base / "cache.h5"
    extract(root, cache, backbone, log=lambda m: None, progress=False)
    model, _ = fit_model(FeatureCache(cache), Config(name="tiny-mtl", epochs=30, head="mtl", hidden=16,
                                                     lr=1e-3, batch=8), seed=0)
    stem = base / "tiny_mtl"
    model.save(stem)
    (base / "images.txt").write_text("\n".join(str(root / p) for p in info["images"]))
    return stem


def synth_images(base: Path) -> list[Path]:
    """The synthetic tree's images written by :func:`tiny_model`."""
    return [Path(p) for p in (base / "images.txt").read_text().splitlines()]


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


def drive_page(url: str, files: list[Path], shots: list[Path], box_fraction=(0.3, 0.3, 0.6, 0.6),
               repeats: int = 1, viewport=(1280, 800), full_page: bool = False) -> dict:
    """Open the page, upload ``files`` ``repeats`` times (timing each), read the first card,
    draw a lesion box on it, screenshot to every path in ``shots``.

    Returns {"timings_ms": [...], "shown": {...first card...}, "box_note": str|None,
             "console_errors": [...], "cards": int}.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    console = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(str(e)))
            page.goto(url + "/")
            page.wait_for_function("() => document.getElementById('model-info').textContent.startsWith('model')")
            for r in range(repeats):
                if r:
                    page.click("#clear")
                page.set_input_files("#file-input", [str(f) for f in files])
                page.wait_for_function(f"() => window.busiTimings.length >= {r + 1}", timeout=30000)
                page.wait_for_function(f"() => document.querySelectorAll('.card').length >= {len(files)}")
            timings = page.evaluate("window.busiTimings.map(t => t.ms)")
            page.wait_for_function("() => document.querySelector('#status').textContent.includes('result')")
            card = page.locator(".card").first   # the newest upload is on top, its files in order
            card.locator(".verdict").wait_for()
            shown = {
                "file": card.get_attribute("data-file"),
                "verdict": card.locator(".verdict").inner_text(),
                "alert": card.locator(".alert").inner_text(),
                "proba": {el.get_attribute("data-class"): el.inner_text() for el in card.locator(".pct").all()},
                "flags": [el.get_attribute("data-flag") for el in card.locator(".flags li[data-flag]").all()],
                "flag_text": card.locator(".flags").inner_text(),
                "meta": card.locator(".meta").inner_text(),
                "has_legend": card.locator(".legend").count() > 0,
            }
            # draw a box by mouse on the first file's image
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
            card = page.locator(".card").first
            note = card.locator(".notes")
            box_note = note.inner_text() if note.count() else None
            box_meta = card.locator(".meta").inner_text()
            page.evaluate("window.scrollTo(0, 0)")
            for s in shots:
                Path(s).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(s), full_page=full_page)
            csv = page.evaluate("window.busiCsv()")
            n_cards = page.locator(".card").count()
        finally:
            browser.close()
    return {"timings_ms": timings, "shown": shown, "box_note": box_note, "box_meta": box_meta,
            "console_errors": console, "cards": n_cards, "csv": csv}
