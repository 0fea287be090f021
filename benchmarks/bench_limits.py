"""Memory under the web server's and the CLI's limits (issue: one request must not exhaust the machine).

Server: ``busi-lite serve`` (shipped model, real backbone) in a subprocess; POST N flat 7000x7000
PNGs (~150 KB each, 147 MB decoded) per request, N = 1, 4, 8, 20, with the default budget of
200 decoded Mpixels per request (4 such files; the rest get a per-file 413), then the same with the
budget raised to 2000 Mpixels (every file decoded, one at a time). Per request: the server's peak RSS
(VmHWM, reset before each request through /proc/PID/clear_refs) and its RSS after the answer.
CLI: ``busi-lite predict FOLDER --json`` over folders of 2 and 8 such images: peak RSS (wait4).
Writes benchmarks/results/limits.json; the load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_asset_args, backbone_path, header, loadavg, log, measure, table, write_results  # noqa: E402

SIDE = 7000


def flat_png(side: int, value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def status(pid: int) -> dict:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}


def serve(bb: Path, mpixels: float):
    cmd = [sys.executable, "-m", "busi_lite.cli", "serve", "--port", "0", "--backbone", str(bb),
           "--max-request-mpixels", str(mpixels), "--max-request-mb", "100"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.search(r"serving (http://\S+/)", line)
        if m:
            return p, m.group(1)
    raise RuntimeError("server did not start")


def post(url: str, blobs) -> tuple[int, int]:
    import json
    import urllib.error
    import urllib.request

    boundary = "busilitebench"
    parts = []
    for i, b in enumerate(blobs):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.png"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + b + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "api/predict", data=body, method="POST",
                                 headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=900) as r:
            code, data = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        code, data = e.code, json.loads(e.read())
    ok = sum(1 for x in data if x.get("ok")) if isinstance(data, list) else 0
    return code, ok


def server_runs(bb: Path, blob: bytes, mpixels: float, counts) -> list[dict]:
    p, url = serve(bb, mpixels)
    rows = []
    try:
        post(url, [flat_png(256, 90)])                  # warm: model, backbone, first request
        base = status(p.pid)["VmRSS"]
        for n in counts:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")   # reset VmHWM
            t0 = time.perf_counter()
            code, ok = post(url, [blob] * n)
            time.sleep(0.5)                              # the memory release runs after the answer
            st = status(p.pid)
            rows.append({"budget_mpixels": mpixels, "files": n, "status": code, "predicted": ok,
                         "seconds": round(time.perf_counter() - t0, 1), "rss_before_mb": round(base),
                         "peak_rss_mb": round(st["VmHWM"]), "rss_after_mb": round(st["VmRSS"]),
                         "loadavg": loadavg()})
            log(f"budget {mpixels:g} Mpx, {n} files: {code}, {ok} predicted, peak {st['VmHWM']:.0f} MB, "
                f"after {st['VmRSS']:.0f} MB")
    finally:
        p.terminate()
        p.wait(30)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_asset_args(ap, data=False)
    ap.add_argument("--counts", default="1,4,8,20")
    args = ap.parse_args(argv)
    bb = backbone_path(args)
    out = header(argv)
    counts = [int(c) for c in args.counts.split(",")]
    blob = flat_png(SIDE, 120)
    log(f"{SIDE}x{SIDE} flat PNG: {len(blob) / 1e3:.0f} KB")
    out["png_kb"] = round(len(blob) / 1e3)
    out["server"] = server_runs(bb, blob, 200.0, counts) + server_runs(bb, blob, 2000.0, counts[:3])
    cli = []
    with tempfile.TemporaryDirectory() as td:
        for n in (2, 8):
            d = Path(td) / f"n{n}"
            d.mkdir()
            for i in range(n):
                (d / f"img{i}.png").write_bytes(blob)
            m = measure([sys.executable, "-m", "busi_lite.cli", "predict", str(d), "--json", "--backbone", str(bb)],
                        quiet=True, wait=False)
            cli.append({"files": n, "peak_rss_mb": round(m["peak_rss_mb"]), "wall_s": round(m["wall_s"], 1),
                        "loadavg": loadavg()})
            log(f"CLI predict over {n} files: peak {m['peak_rss_mb']:.0f} MB")
    out["cli"] = cli
    print(table([[r["budget_mpixels"], r["files"], r["status"], r["predicted"], r["peak_rss_mb"], r["rss_after_mb"]]
                 for r in out["server"]], ["budget Mpx", "files", "status", "predicted", "peak MB", "after MB"]))
    print(table([[r["files"], r["peak_rss_mb"]] for r in cli], ["CLI files", "peak MB"]))
    print(write_results("limits", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
