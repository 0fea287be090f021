"""The cold `busi-lite predict` imports only what one image needs (benchmarks/bench_floor.py times it).

A fresh interpreter runs `busi-lite predict` on one synthetic PNG with the synthetic model and
backbone (conftest.tiny_world), then lists sys.modules: the other verbs, HDF5, DICOM, plotting, web, training,
threadpoolctl (the BLAS limit is set through the environment before NumPy loads), the thread
pool (one file is decoded in the calling thread) and Pillow's other decoders stay unloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

NEVER = ("h5py", "pydicom", "matplotlib", "starlette", "uvicorn", "threadpoolctl", "concurrent.futures", "csv",
         "importlib.resources", "tempfile", "PIL.GifImagePlugin", "PIL.JpegImagePlugin", "PIL.BmpImagePlugin",
         "PIL.ImageFilter", "busi_lite.training", "busi_lite.evaluation", "busi_lite.report", "busi_lite.web",
         "busi_lite.features.cache", "busi_lite.io.data", "busi_lite.serving.overlay", "busi_lite.cli.train",
         "busi_lite.cli.data", "busi_lite.cli.tables", "busi_lite.cli.options")

CODE = """
import json, sys
from busi_lite.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
mods = sorted(sys.modules)
import os
from threadpoolctl import threadpool_info
blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print("MODULES " + json.dumps({"code": code, "modules": mods, "blas": blas, "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def test_cold_predict_imports_only_what_one_image_needs(tmp_path, tiny_world):
    stem, onnx = tiny_world["model"], tiny_world["backbone"]
    img = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(img)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUSI_LITE_")}
    env.pop("OPENBLAS_NUM_THREADS", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", CODE, "predict", str(img), "--model", str(stem), "--backbone",
                        str(onnx)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    line = next(x for x in r.stdout.splitlines() if x.startswith("MODULES "))
    out = json.loads(line[len("MODULES "):])
    assert out["code"] == 0, r.stderr
    loaded = set(out["modules"])
    assert "busi_lite.serving.inference" in loaded and "PIL.PngImagePlugin" in loaded   # it did predict
    bad = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NEVER))
    assert not bad, f"the cold predict path imported {bad}"
    assert out["blas"] and set(out["blas"]) == {1}, out["blas"]   # --blas-threads' default, without threadpoolctl
    assert out["env"] is None                                     # the user's environment is left as it was
