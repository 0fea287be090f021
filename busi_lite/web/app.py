"""``busi-lite serve``: a local web page and JSON API on Starlette + uvicorn.

Contract:

* :func:`create_app` builds the ASGI app around one :class:`~busi_lite.serving.inference.Predictor`
  (loaded once, before the app exists). :func:`serve` loads the predictor and runs uvicorn.
* Routes: ``GET /`` the page (static files, no CDN: works offline); ``GET /api/info``;
  ``POST /api/predict`` (multipart: ``files`` one or more, optional ``box=x0,y0,x1,y1``
  in original pixels, optional ``preview=1``) -> JSON list of ``predict --json`` records;
  ``GET /openapi.json``.
* Safe by default: bound to 127.0.0.1; uploads are held in memory (the multipart parser
  never spools to disk; DICOM see :mod:`.uploads`) and never stored unless ``save_dir`` is given; limits per
  file and per request answer 413; non-images 415, broken files 400, each a JSON
  ``{"error": "what -> fix", "file": name}``; any other failure is a JSON 500 without
  a traceback (the traceback goes to the server log only).
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from busi_lite.common.atomic import write_bytes, write_text
from busi_lite.common.constants import VERSION as __version__
from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.common.jsonio import dumps, jsonable
from busi_lite.serving.inference import NO_BOX_NOTE, Predictor
from busi_lite.serving.prediction import Prediction
from busi_lite.web import openapi
from busi_lite.web.uploads import UploadError, decode, dicom_available, parse_box, preview, safe_name

log = logging.getLogger("busi_lite.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MB = 1024 * 1024
MAX_FILES = 200
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def _json(content, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(content), status_code=status)   # NaN/inf -> null


def _error(status: int, what: str, fix: str | None = None, file: str | None = None, **more) -> JSONResponse:
    body = {"error": f"{what} -> {fix}" if fix else what, "file": file, **more}
    return _json(body, status)


class _Headers:
    """ASGI middleware adding the security headers to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _model_name(model) -> str | None:
    """The model card's config name, or None for a model without a card."""
    card = getattr(model, "card", None)
    return None if card is None else card.config.name


class _Service:
    """The app's state: the predictor, its description, the limits; no globals."""

    def __init__(self, predictor, model_path, save_dir, max_file_mb, max_request_mb):
        self.predictor = predictor
        self.model_path = model_path
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.max_file = int(max_file_mb * MB)
        self.max_request = int(max_request_mb * MB)
        self.lock = threading.Lock()   # one prediction at a time: the backbone already uses every core

    def info(self) -> dict:
        p = self.predictor
        m, bb = p.model, p.backbone
        return {
            "model": {"name": _model_name(m), "path": self.model_path,
                      "head": getattr(m.head, "kind", None), "has_lesion_map": bool(m.has_lesion_map),
                      "supports_box": bool(getattr(p, "supports_box", False))},
            "backbone": {"file": Path(str(bb.path)).name, "sha256": bb.sha256},
            "classes": list(m.classes),
            "malignant_threshold": p.malignant_threshold,
            "thresholds": p.thresholds,
            "limits": {"max_file_mb": self.max_file / MB, "max_request_mb": self.max_request / MB,
                       "max_files": MAX_FILES},
            "dicom": dicom_available(),
            "version": __version__,
            "notice": "Research tool, not a medical device: no output is a diagnosis.",
        }

    def run(self, uploads: list[tuple[str, bytes]], box_text: str | None, want_preview: bool):
        """Decode and predict (blocking; called in a worker thread).
        Returns (records, errors) where errors are UploadErrors of unusable files."""
        slots = [[] for _ in uploads]      # records per upload, in upload order
        errors, frames = [], []              # frames: (upload index, Frame)
        for i, (name, blob) in enumerate(uploads):
            try:
                frames += [(i, f) for f in decode(name, blob)]
            except UploadError as e:
                errors.append(e)
                slots[i].append(Prediction(name, False, str(e)).to_dict())
        box = None
        if box_text and frames:
            rgb = frames[0][1].rgb
            box = parse_box(box_text, (rgb.shape[1], rgb.shape[0]))
        if frames:
            rgbs, names = [f.rgb for _, f in frames], [f.name for _, f in frames]
            supports_box = bool(getattr(self.predictor, "supports_box", False))
            with self.lock:
                if box is not None and supports_box:
                    preds = self.predictor.predict_arrays(rgbs, names=names, boxes=[box] * len(rgbs))
                else:
                    preds = self.predictor.predict_arrays(rgbs, names=names)
            for (i, f), p in zip(frames, preds):
                rec = p.to_dict()
                rec.update(f.extra)
                if box is not None:
                    rec["box"] = list(box)
                    rec["notes"] = rec.get("notes", []) + ([] if supports_box else [NO_BOX_NOTE])
                if want_preview:
                    rec["preview"] = preview(f.rgb)
                slots[i].append(rec)
        records = [r for slot in slots for r in slot]
        if self.save_dir is not None:
            self._save(uploads, slots)
        return records, errors

    def _save(self, uploads, slots) -> None:
        """Keep each upload and its records in save_dir (only when the user asked for it)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        for i, (name, blob) in enumerate(uploads):
            stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:120]
            dest = self.save_dir / f"{stamp}-{i}-{stem}"
            write_bytes(dest, blob)
            mine = [{k: v for k, v in r.items() if k != "preview"} for r in slots[i]]
            write_text(dest.with_name(dest.name + ".json"), dumps(mine))


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(body: bytes):
    yield body


async def _predict(request: Request) -> JSONResponse:
    svc: _Service = request.app.state.service
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return _error(415, f"expected a multipart/form-data upload, got {ctype or 'no content type'!r}",
                      "POST the images as form field 'files'")
    body = await _read_body(request, svc.max_request)
    if body is None:
        return _error(413, f"request is over the {svc.max_request / MB:g} MB limit",
                      "send fewer or smaller files per request")
    parser = MultiPartParser(request.headers, _replay(body), max_files=MAX_FILES, max_fields=20)
    parser.spool_max_size = svc.max_request + 1   # keep every upload in memory, never on disk
    try:
        form = await parser.parse()
    except MultiPartException as e:
        return _error(400, f"malformed upload ({e})", "POST a multipart form with field 'files'")
    try:
        files = [v for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            return _error(400, "no file in the upload", "send one or more files in form field 'files'")
        uploads = []
        for i, f in enumerate(files):
            name = safe_name(f.filename, i)
            blob = await f.read()
            if len(blob) > svc.max_file:
                return _error(413, f"{name}: {len(blob) / MB:.1f} MB is over the {svc.max_file / MB:g} MB "
                              "limit per file", "downscale or crop the file", file=name)
            uploads.append((name, blob))
    finally:
        await form.close()
    box_text = form.get("box")
    box_text = box_text.strip() if isinstance(box_text, str) and box_text.strip() else None
    if box_text is not None and len(uploads) != 1:
        return _error(400, f"box was sent with {len(uploads)} files", "send a box with exactly one file")
    want_preview = form.get("preview") in ("1", "true")
    t0 = time.perf_counter()
    try:
        records, errors = await run_in_threadpool(svc.run, uploads, box_text, want_preview)
    except UploadError as e:
        return _error(e.status, e.what, e.fix, file=e.file)
    log.info("predicted %d file(s), %d record(s) in %.0f ms", len(uploads), len(records),
             1000 * (time.perf_counter() - t0))
    if errors and len(errors) == len(uploads):
        first = next((e for e in errors if e.status == 415), errors[0])
        return _error(first.status, first.what, first.fix, file=first.file, results=records)
    return _json(records)


async def _info(request: Request) -> JSONResponse:
    return _json(request.app.state.service.info())


async def _openapi(request: Request) -> JSONResponse:
    svc = request.app.state.service
    return JSONResponse(openapi.spec(svc.max_file / MB, svc.max_request / MB))


async def _index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error while handling the request", "see the server's log; retry or report it")


def _check_limits(max_file_mb, max_request_mb) -> None:
    for name, v in (("max_file_mb", max_file_mb), ("max_request_mb", max_request_mb)):
        if not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{name} must be a positive number of megabytes, got {v!r}",
                              f"pass e.g. {name}=20", param=name)
    if max_request_mb < max_file_mb:
        raise ConfigError(f"max_request_mb ({max_request_mb:g}) is below max_file_mb ({max_file_mb:g})",
                          "make the request limit at least the file limit", param="max_request_mb")


def create_app(predictor, *, model_path: str | None = None, save_dir=None, max_file_mb: float = 20.0,
               max_request_mb: float = 100.0) -> Starlette:
    """The ASGI app around an already loaded ``predictor`` (see module docstring).
    model_path: shown by /api/info; save_dir: keep uploads and results there (default: keep nothing)."""
    _check_limits(max_file_mb, max_request_mb)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/api/info", _info, methods=["GET"]),
        Route("/api/predict", _predict, methods=["POST"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.service = _Service(predictor, model_path, save_dir, max_file_mb, max_request_mb)
    app.add_middleware(_Headers)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model=None, backbone=None, save_dir=None,
          max_file_mb: float = 20.0, max_request_mb: float = 100.0, echo=None) -> None:
    """Load the model once, bind ``host:port`` (0: any free port), print the URL, serve until Ctrl-C.
    ``echo``: prints a line (default: print, flushed)."""
    import uvicorn

    from busi_lite.common.resources import resolve

    echo = echo or functools.partial(print, flush=True)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer within 0..65535, got {port!r}", "pass e.g. port=8000",
                          param="port")
    _check_limits(max_file_mb, max_request_mb)
    predictor = Predictor(model, backbone)
    model_path = str(resolve("model", model).path)
    app = create_app(predictor, model_path=model_path, save_dir=save_dir, max_file_mb=max_file_mb,
                     max_request_mb=max_request_mb)
    sock = _listen(host, port)                # bound before the URL is printed: the URL answers
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    echo(f"busi-lite: model {model_path}, backbone {predictor.backbone.path}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: bound to {host}: other machines can reach this page; it has no login")
    if save_dir is not None:
        echo(f"uploads (as sent, DICOM headers included) and their results are kept in {save_dir}")
    echo(f"serving http://{shown}:{port}/  (research tool, not a diagnosis; Ctrl-C stops)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False)).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BusiError(f"cannot listen on {host}:{port} ({e.strerror or e})",
                        "pick another port, or stop the program using it", param="port") from e
    return sock
