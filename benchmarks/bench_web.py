"""Upload-to-verdict time of the local web page, measured in a real headless Chromium.

    python benchmarks/bench_web.py [--data DIR] [--backbone FILE] [--model STEM]
                                   [--images 20] [--cine-repeats 5] [--quiet-wait S]

uvicorn serves ``busi_lite.web.app.create_app`` (model loaded once) on 127.0.0.1 in a thread of
this process; Playwright drives Debian's /usr/bin/chromium (headless) on the same machine, so
browser, server and model share the same cores, as on a clinic PC. The time is the page's own:
performance.now() from the file pick to the verdict painted (next frame after the result card
is in the DOM), read from window.busiTimings (tests/web_support.py: upload()).

  single   --images held-out BUSI test images of the model (from its card), each uploaded alone;
           the first 2 uploads are warm-up and reported apart.
  cine     pydicom's examples_ybr_color.dcm (30 frames, JPEG baseline, 600x430 with an
           ultrasound region) uploaded --cine-repeats times: one result per frame.

Targets (issue 12): one image <= 1 s; a 30-frame DICOM cine <= 2 s (2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _common as C  # noqa: E402
from web_support import browser_page, chromium_path, held_out_images, running_server, upload  # noqa: E402

TARGETS = {"single_p95_ms": 1000.0, "cine30_max_ms": 2000.0}
WARMUP = 2


def summary(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"n": len(s), "p50_ms": round(statistics.median(s), 1),
            "p95_ms": round(s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))], 1),
            "max_ms": round(s[-1], 1), "mean_ms": round(statistics.fmean(s), 1), "all_ms": [round(x, 1) for x in ms]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_asset_args(p)
    C.add_quiet_args(p)
    p.add_argument("--model", default=str(C.REPO / "weights" / "busi_lite_default"), help="model stem")
    p.add_argument("--images", type=int, default=20, help="held-out images uploaded one at a time")
    p.add_argument("--cine-repeats", type=int, default=5)
    args = p.parse_args(argv)
    C.configure(args)
    if chromium_path() is None:
        sys.exit("error: no chromium on PATH (apt-get install chromium)")
    from pydicom.data import get_testdata_file

    from busi_lite.serving.inference import Predictor
    from busi_lite.web.app import create_app

    data, backbone, model = C.data_path(args), C.backbone_path(args), Path(args.model)
    images = held_out_images(model, data)[: args.images + WARMUP]
    cine = get_testdata_file("examples_ybr_color.dcm")
    out = C.header(argv, extra_versions=(("starlette", "starlette"), ("uvicorn", "uvicorn"),
                                         ("playwright", "playwright"), ("pydicom", "pydicom")))
    out.update({"model": str(model), "backbone": str(backbone), "targets": TARGETS, "warmup": WARMUP,
                "browser": chromium_path()})
    predictor = Predictor(model, backbone)
    with tempfile.TemporaryDirectory() as tmp, running_server(create_app(predictor)) as url:
        cine_copy = Path(tmp) / "examples_ybr_color.dcm"
        cine_copy.write_bytes(Path(cine).read_bytes())
        with browser_page(url) as (page, console):
            out["quiet"] = C.wait_quiet()
            single = []
            for i, img in enumerate(images):
                single.append(upload(page, [img]))
                C.log(f"  {img.name}: {single[-1]:.0f} ms")
            out["single"] = summary(single[WARMUP:])
            out["single"]["warmup_ms"] = [round(x, 1) for x in single[:WARMUP]]
            out["single"]["files"] = [str(f.relative_to(data)) for f in images[WARMUP:]]
            page.click("#clear")
            cine_ms = []
            for _ in range(args.cine_repeats):
                cine_ms.append(upload(page, [cine_copy], timeout_ms=120000))
                n = page.locator(".card").first.locator("input[type=range]").get_attribute("max")
                C.log(f"  cine ({int(n) + 1} frames): {cine_ms[-1]:.0f} ms")
                page.click("#clear")
            out["cine"] = summary(cine_ms)
            out["cine"]["frames"] = int(n) + 1
            out["console_errors"] = console
    out["meets"] = {"single_p95": out["single"]["p95_ms"] <= TARGETS["single_p95_ms"],
                    "cine30_max": out["cine"]["max_ms"] <= TARGETS["cine30_max_ms"]}
    path = C.write_results("web", out)
    C.log(f"single image: p50 {out['single']['p50_ms']} ms, p95 {out['single']['p95_ms']} ms; "
          f"30-frame cine: p50 {out['cine']['p50_ms']} ms, max {out['cine']['max_ms']} ms -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
