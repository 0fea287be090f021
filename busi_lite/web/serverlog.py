"""The server's log and the addresses it prints.

* :func:`configure_logging`: one line per event on stderr, with a UTC timestamp and the level.
* :func:`access_line`: one line per ``POST /api/predict`` answer, whatever its status (200, 400, 408,
  413, 415, 500): client, status, and what happened (images predicted, files refused, the error).
* :func:`reachable_urls`: for a server bound to every interface (``0.0.0.0`` / ``::``), the URLs other
  machines can use (this machine's own addresses), never ``http://0.0.0.0:PORT/``.
"""

from __future__ import annotations

import json
import logging
import socket
import time

ANY_HOST = ("0.0.0.0", "::", "")


class _UTC(logging.Formatter):
    converter = time.gmtime


def configure_logging(level: int = logging.INFO) -> None:
    """'2026-12-04T17:40:02Z INFO client 127.0.0.1:51234 POST /api/predict -> 200: ...' on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(_UTC("%(asctime)sZ %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("busi_lite")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def access_line(client: str, method: str, path: str, status: int, body: bytes | None, detail: str = "") -> str:
    """One line per answer; an error answer's ``error`` text (from its JSON body) is quoted."""
    what = detail
    if status >= 400 and body:
        try:
            what = str(json.loads(body).get("error", ""))[:300]
        except (ValueError, AttributeError):
            what = ""
    return f"client {client} {method} {path} -> {status}" + (f": {what}" if what else "")


def predicted_detail(n_files: int, records: list, ms: float) -> str:
    """'3 image(s)/frame(s) predicted (1 verdict withheld) from 4 file(s), 1 file(s) refused, 812 ms':
    a refused file (not an image, broken) is never counted as predicted."""
    ok = [r for r in records if r.get("ok")]
    refused = len({r.get("path") for r in records if not r.get("ok")})
    withheld = sum(1 for r in ok if r.get("withheld"))
    return (f"{len(ok)} image(s)/frame(s) predicted ({withheld} verdict(s) withheld) from {n_files} file(s), "
            f"{refused} file(s) refused, {ms:.0f} ms")


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other machines may reach (no loopback); [] when none is found.
    Nothing is sent: a UDP socket's connect() only picks the outgoing interface."""
    found = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))          # TEST-NET-1: never routed to anyone
            found.append(s.getsockname()[0])
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(info[4][0])
    except OSError:
        pass
    out = []
    for a in found:
        if not a.startswith("127.") and a != "0.0.0.0" and a not in out:
            out.append(a)
    return out


def reachable_urls(host: str, port: int) -> list[str]:
    """The URLs to print for a server bound to ``host``: the host itself, or for every interface
    this machine's addresses and then 127.0.0.1."""
    if host in ANY_HOST:
        return [f"http://{a}:{port}/" for a in local_addresses()] + [f"http://127.0.0.1:{port}/"]
    shown = f"[{host}]" if ":" in host else host
    return [f"http://{shown}:{port}/"]
