"""``busi-lite serve``: a local web page and JSON API on Starlette + uvicorn.

Contract:

* :func:`create_app` builds the ASGI app around one :class:`~busi_lite.serving.inference.Predictor`
  (loaded once, before the app exists). :func:`serve` loads the predictor and runs uvicorn.
* Routes: ``GET /`` the page (static files, no CDN: works offline); ``GET /api/info`` (with the
  model's provenance: name, digest, threshold origin); ``POST /api/predict`` (multipart: ``files``
  one or more, optional ``box=x0,y0,x1,y1`` in original pixels, optional ``preview=1``, optional
  ``show_anyway=1``: verdicts for unusual inputs too, research use) -> JSON list of ``predict --json``
  records (each naming its model, plus ``shift_coords`` and ``screen``; a withheld verdict has ``label`` null and
  ``withheld`` its reason); ``POST /api/site-check`` (JSON ``{"coords": [...]}``: a session's
  shift_coords) -> the batch site-shift check (busi_lite.serving.shift.ShiftCheck) and the answer
  every usual card then recommends (busi_lite.serving.advice.batch_answer); ``/api/info`` also
  names the site given (``site``: busi_lite.serving.advice.SiteStatus); ``GET /openapi.json``.
* Safe by default: bound to 127.0.0.1; uploads are held in memory (the multipart parser
  never spools to disk; DICOM is decoded from memory) and never stored unless ``save_dir`` is given;
  limits per file and per request answer 413; non-images 415, broken files 400, each a JSON
  ``{"error": "what -> fix", "file": name}``; any other failure is a JSON 500 without
  a traceback (the traceback goes to the server log only).
* Limits per request: bytes (``max_request_mb``), files (``MAX_FILES``), DECODED pixels
  (``max_request_mpixels``, read from each file's header before it is decoded) and time (an
  upload idle for ``BODY_IDLE_S`` or longer than ``BODY_TOTAL_S`` is answered 408). Files are
  decoded and predicted one at a time, so memory holds one file's frames; a file that would take
  the request over its pixel budget is not decoded: its record is a 413 error naming it.
* Origin and host: a request whose ``Host`` is not one of ``allowed_hosts`` (default: the
  loopback names; ``serve`` adds the bound host) is answered 400 (DNS rebinding); a POST whose
  ``Origin`` (or ``Sec-Fetch-Site: cross-site``) is not the page's own is answered 403.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from busi_lite.common.atomic import write_bytes, write_text
from busi_lite.common.constants import VERSION as __version__
from busi_lite.common.errors import BusiError, ConfigError
from busi_lite.common.jsonio import dumps, jsonable
from busi_lite.serving.inference import NO_BOX_NOTE, Predictor
from busi_lite.serving.prediction import Prediction
from busi_lite.serving.verdict import screen_sentence
from busi_lite.web import openapi, serverlog
from busi_lite.web.uploads import (
    UploadError,
    declared_pixels,
    decode,
    dicom_available,
    parse_box,
    preview,
    remove_stale_copies,
    safe_name,
)

log = logging.getLogger("busi_lite.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MB = 1024 * 1024
MAX_FILES = 200
MAX_REQUEST_MPIXELS = 200.0  # decoded pixels per request (millions): four 50-Mpixel images
BODY_IDLE_S = 30.0           # an upload sending nothing for this long is answered 408
BODY_TOTAL_S = 300.0         # and one taking longer than this in all
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
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


def _host_name(host_header: str) -> str:
    """``Host`` header -> host name without port or IPv6 brackets, lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Guard:
    """ASGI middleware: refuse a Host not in ``allowed`` (400) and a cross-origin POST (403)."""

    def __init__(self, app, allowed):
        self.app, self.allowed = app, {a.lower().strip("[]") for a in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if _host_name(host) not in self.allowed:
            log.warning("refused Host %r (allowed: %s)", host[:100], ", ".join(sorted(self.allowed)))
            resp = _error(400, f"Host {host[:100]!r} is not served here",
                          "open the page at the address `busi-lite serve` printed")
            return await resp(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            cross = headers.get("sec-fetch-site") == "cross-site"
            if cross or (origin is not None and origin.lower().split("://", 1)[-1] != host.lower()):
                log.warning("refused cross-origin %s %s from %r", scope["method"], scope["path"], (origin or "")[:100])
                resp = _error(403, f"cross-origin request from {(origin or 'another site')[:100]!r} refused",
                              "upload from the busi-lite page itself")
                return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


def _release_memory() -> None:
    """Give freed memory back to the system after a large or failed request (glibc: malloc_trim)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def _public_provenance(pv) -> dict | None:
    """The provenance record as the page and API show it: the model's file name, never its absolute path."""
    if pv is None:
        return None
    d = pv.to_dict()
    d["path"] = Path(d["path"]).name if d.get("path") else None
    return d


def _model_name(model) -> str | None:
    """The model card's config name, or None for a model without a card."""
    card = getattr(model, "card", None)
    return None if card is None else card.config.name


class _Service:
    """The app's state: the predictor, its description, the limits; no globals."""

    def __init__(self, predictor, model_path, save_dir, max_file_mb, max_request_mb, max_request_mpixels):
        self.predictor = predictor
        self.model_path = model_path
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.max_file = int(max_file_mb * MB)
        self.max_request = int(max_request_mb * MB)
        self.max_pixels = int(max_request_mpixels * 1e6)
        self.lock = threading.Lock()   # one prediction at a time: the backbone already uses every core
        self.pv = getattr(predictor, "provenance", None)     # one record per loaded model
        self.public_pv = _public_provenance(self.pv)         # as the page and API show it, built once

    def info(self) -> dict:
        p = self.predictor
        m, bb = p.model, p.backbone
        pv = self.pv
        return {
            "provenance": self.public_pv,
            "model": {"name": pv.name if pv is not None else _model_name(m),
                      "file": Path(self.model_path).name if self.model_path else None,
                      "sha256": getattr(p, "model_sha256", None),
                      "head": getattr(m.head, "kind", None), "has_lesion_map": bool(m.has_lesion_map),
                      "supports_box": bool(getattr(p, "supports_box", False)),
                      "site_check_min": m.card.shift.batch_min if m.card is not None and m.card.shift else None,
                      "trained_on": m.card.trained_on() if m.card is not None else []},
            "site": None if getattr(p, "site", None) is None else p.site.to_json(),
            "backbone": {"file": Path(str(bb.path)).name, "sha256": bb.sha256},
            "classes": list(m.classes),
            "malignant_threshold": p.malignant_threshold,
            "thresholds": p.thresholds,
            "limits": {"max_file_mb": self.max_file / MB, "max_request_mb": self.max_request / MB,
                       "max_files": MAX_FILES, "max_request_mpixels": self.max_pixels / 1e6,
                       "body_idle_s": BODY_IDLE_S, "body_total_s": BODY_TOTAL_S},
            "dicom": dicom_available(),
            "version": __version__,
            "notice": "Research tool, not a medical device: no output is a diagnosis.",
        }

    def run(self, uploads: list[tuple[str, bytes]], box_text: str | None, want_preview: bool,
            show_anyway: bool = False):
        """Decode and predict one file at a time (blocking; called in a worker thread).
        Returns (records, errors) where errors are UploadErrors of unusable files."""
        slots = [[] for _ in uploads]      # records per upload, in upload order
        errors, used = [], 0                 # used: decoded pixels so far
        supports_box = bool(getattr(self.predictor, "supports_box", False))
        for i, (name, blob) in enumerate(uploads):
            try:
                px = declared_pixels(name, blob)
                if used + px > self.max_pixels:
                    raise UploadError(f"{name}: its {px / 1e6:.1f} Mpixels take the request over the "
                                      f"{self.max_pixels / 1e6:g} Mpixel limit per request ({used / 1e6:.1f} "
                                      "Mpixels already decoded)", "send it in another request, or downscale it",
                                      413, name)
                frames = decode(name, blob)
            except UploadError as e:
                errors.append(e)
                slots[i].append(Prediction(name, False, str(e)).to_dict())
                continue
            used += max(px, sum(f.rgb.shape[0] * f.rgb.shape[1] for f in frames))
            box = None
            if box_text:
                rgb = frames[0].rgb
                box = parse_box(box_text, (rgb.shape[1], rgb.shape[0]))
            rgbs, names = [f.rgb for f in frames], [f.name for f in frames]
            kw = {"show_anyway": True} if show_anyway else {}
            with self.lock:
                if box is not None and supports_box:
                    preds = self.predictor.predict_arrays(rgbs, names=names, boxes=[box] * len(rgbs), **kw)
                else:
                    preds = self.predictor.predict_arrays(rgbs, names=names, **kw)
            for f, p in zip(frames, preds):
                rec = p.to_dict()
                rec["model"] = self.public_pv if p.model is self.pv else _public_provenance(p.model)
                rec.update(shift_coords=p.shift_coords, screen=screen_sentence(p))  # session site check; screen words
                rec.update({k: v for k, v in f.extra.items() if k != "notes"})
                rec["notes"] = rec.get("notes", []) + f.extra.get("notes", [])
                if box is not None:
                    rec["box"] = list(box)
                    rec["notes"] = rec.get("notes", []) + ([] if supports_box else [NO_BOX_NOTE])
                if want_preview:
                    rec["preview"] = preview(f.rgb)
                slots[i].append(rec)
            del frames, rgbs
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


class _BodyTimeout(Exception):
    """The client sent its upload too slowly."""


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes; raises _BodyTimeout when the
    client is idle for BODY_IDLE_S or takes longer than BODY_TOTAL_S in all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, total = [], 0
    deadline = time.monotonic() + BODY_TOTAL_S
    stream = request.stream().__aiter__()
    while True:
        wait = min(BODY_IDLE_S, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(wait, 0.001))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise _BodyTimeout() from None
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(body: bytes):
    yield body


async def _predict(request: Request) -> JSONResponse:
    response = await _predict_files(request)
    log.info(serverlog.access_line(_client(request), "POST", "/api/predict", response.status_code, response.body,
                         getattr(request.state, "detail", "")))
    response.background = BackgroundTask(_release_memory)   # after the answer, once the request's data is gone
    return response


async def _predict_files(request: Request) -> JSONResponse:
    svc: _Service = request.app.state.service
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return _error(415, f"expected a multipart/form-data upload, got {ctype or 'no content type'!r}",
                      "POST the images as form field 'files'")
    try:
        body = await _read_body(request, svc.max_request)
    except ClientDisconnect:       # logged once, by the access line (client, status, this text)
        return _error(400, "client disconnected during the upload")
    except _BodyTimeout:
        return _error(408, f"upload too slow (idle {BODY_IDLE_S:g} s or over {BODY_TOTAL_S:g} s in all)",
                      "retry on a faster connection, or send fewer files per request")
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
                              "limit per file", "downscale or crop the file, or restart the server with a higher "
                              "limit: busi-lite serve --max-file-mb N", file=name)
            uploads.append((name, blob))
    finally:
        await form.close()
    box_text = form.get("box")
    box_text = box_text.strip() if isinstance(box_text, str) and box_text.strip() else None
    if box_text is not None and len(uploads) != 1:
        return _error(400, f"box was sent with {len(uploads)} files", "send a box with exactly one file")
    want_preview = form.get("preview") in ("1", "true")
    show_anyway = form.get("show_anyway") in ("1", "true")
    t0 = time.perf_counter()
    try:
        records, errors = await run_in_threadpool(svc.run, uploads, box_text, want_preview, show_anyway)
    except UploadError as e:
        return _error(e.status, e.what, e.fix, file=e.file)
    request.state.detail = serverlog.predicted_detail(len(uploads), records, 1000 * (time.perf_counter() - t0))
    if errors and len(errors) == len(uploads):
        first = next((e for e in errors if e.status == 415), errors[0])
        return _error(first.status, first.what, first.fix, file=first.file, results=records)
    return _json(records)


MAX_SITE_CHECK_BYTES = 4 * MB   # /api/site-check: about 4000 images' coordinates


async def _site_check(request: Request) -> JSONResponse:
    """The session's site-shift check: JSON {"coords": [[...], ...]} (the shift_coords of the
    session's predictions) -> the ShiftCheck (busi_lite.serving.shift) with its warning, and the
    answer every usual card of the session should recommend (``recommended``/``recommended_reason``,
    null when the batch was not checked; busi_lite.serving.advice.batch_answer)."""
    from busi_lite.serving.advice import batch_answer
    from busi_lite.serving.shift import check_coords

    try:
        body = await _read_body(request, MAX_SITE_CHECK_BYTES)
    except (ClientDisconnect, _BodyTimeout):
        return _error(400, "the site-check request did not arrive whole", "retry")
    if body is None:
        return _error(413, f"site-check request over {MAX_SITE_CHECK_BYTES // MB} MB", "send fewer coordinates")
    try:
        coords = json.loads(body)["coords"]
        model = request.app.state.service.predictor.model
        info = model.card.shift if model.card is not None else None
        width = len(info.basis[0]) if info is not None else None
        ok = isinstance(coords, list) and all(
            c is None or (isinstance(c, list) and (width is None or len(c) == width)
                          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c))
            for c in coords)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        return _error(400, "site-check body must be JSON {\"coords\": [[numbers], ...]}",
                      "send the shift_coords of the session's predictions")
    check = check_coords(model, coords)
    pr = request.app.state.service.predictor
    rec, why = batch_answer(check, bool(getattr(pr, "supports_box", False)), getattr(pr, "site", None)) or (None, None)
    return _json({**check.to_json(), "recommended": rec, "recommended_reason": why})


def _client(request: Request) -> str:
    c = request.client
    return f"{c.host}:{c.port}" if c else "?"


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


def _check_limits(max_file_mb, max_request_mb, max_request_mpixels=MAX_REQUEST_MPIXELS) -> None:
    for name, v in (("max_file_mb", max_file_mb), ("max_request_mb", max_request_mb),
                    ("max_request_mpixels", max_request_mpixels)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise ConfigError(f"{name} must be a positive number of megabytes, got {v!r}",
                              f"pass e.g. {name}=20", param=name)
    if max_request_mb < max_file_mb:
        raise ConfigError(f"max_request_mb ({max_request_mb:g}) is below max_file_mb ({max_file_mb:g})",
                          "make the request limit at least the file limit", param="max_request_mb")


def create_app(predictor, *, model_path: str | None = None, save_dir=None, max_file_mb: float = 20.0,
               max_request_mb: float = 100.0, max_request_mpixels: float = MAX_REQUEST_MPIXELS,
               allowed_hosts=LOOPBACK_HOSTS) -> Starlette:
    """The ASGI app around an already loaded ``predictor`` (see module docstring).
    model_path: its file name is shown by /api/info; save_dir: keep uploads and results there
    (default: keep nothing); allowed_hosts: the names the ``Host`` header may carry."""
    _check_limits(max_file_mb, max_request_mb, max_request_mpixels)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/api/info", _info, methods=["GET"]),
        Route("/api/predict", _predict, methods=["POST"]),
        Route("/api/site-check", _site_check, methods=["POST"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.service = _Service(predictor, model_path, save_dir, max_file_mb, max_request_mb, max_request_mpixels)
    app.add_middleware(_Guard, allowed=tuple(allowed_hosts))
    app.add_middleware(_Headers)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model=None, backbone=None, save_dir=None,
          max_file_mb: float = 20.0, max_request_mb: float = 100.0, echo=None,
          max_request_mpixels: float = MAX_REQUEST_MPIXELS, allowed_hosts=(), site: str | None = None) -> None:
    """Load the model once, bind ``host:port`` (0: any free port), print the URL, serve until Ctrl-C.
    ``echo``: prints a line (default: print, flushed); ``site``: the images' site (Predictor)."""
    import uvicorn

    from busi_lite.common.resources import resolve

    echo = echo or functools.partial(print, flush=True)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer within 0..65535, got {port!r}", "pass e.g. port=8000",
                          param="port")
    _check_limits(max_file_mb, max_request_mb, max_request_mpixels)
    removed = remove_stale_copies()
    if removed:
        echo(f"removed {len(removed)} DICOM upload cop{'y' if len(removed) == 1 else 'ies'} a killed server left "
             "in /dev/shm")
    predictor = Predictor(model, backbone, site=site)
    model_path = str(resolve("model", model).path)
    hosts = (*LOOPBACK_HOSTS, *allowed_hosts) if host in LOOPBACK_HOSTS else (host, *LOOPBACK_HOSTS, *allowed_hosts)
    if host in serverlog.ANY_HOST:       # bound to every interface: the addresses it prints must pass the Host check
        hosts = (*hosts, *serverlog.local_addresses())
    app = create_app(predictor, model_path=model_path, save_dir=save_dir, max_file_mb=max_file_mb,
                     max_request_mb=max_request_mb, max_request_mpixels=max_request_mpixels,
                     allowed_hosts=hosts)
    sock = _listen(host, port)                # bound before the URL is printed: the URL answers
    port = sock.getsockname()[1]
    urls = serverlog.reachable_urls(host, port)
    echo(f"busi-lite: {predictor.describe()}")
    echo(f"busi-lite: {predictor.site.text}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: bound to {host}: other machines can reach this page; it has no login")
    if save_dir is not None:
        echo(f"uploads (as sent, DICOM headers included) and their results are kept in {save_dir}")
    echo(f"serving {urls[0]}  (research tool, not a diagnosis; Ctrl-C stops)")
    for u in urls[1:]:
        echo(f"        also {u}")
    serverlog.configure_logging()
    config = uvicorn.Config(app, log_level="warning", server_header=False, timeout_keep_alive=5,
                            limit_concurrency=64, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


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
