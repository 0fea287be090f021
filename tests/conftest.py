"""Shared fixtures: synthetic stand-ins (always available) and real assets (opt-in).

Real assets come from environment variables:

* ``BUSI_LITE_DATA``     - BUSI root containing ``normal/``, ``benign/``, ``malignant/``
* ``BUSI_LITE_BACKBONE`` - the MobileNetV2 ``.onnx`` backbone

If one is unset or points at nothing usable the test is skipped, unless
``BUSI_LITE_REQUIRE_REAL=1``, in which case it fails (so CI cannot silently skip).
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# `from synth import ...` works from any test module.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
# Let `import busi_lite` work from a plain checkout; appended so an installed
# copy (e.g. editable install) still takes precedence.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from synth import CLASSES, make_busi_tree, make_tiny_onnx  # noqa: E402


# --------------------------------------------------------------------------- #
# Synthetic assets
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """Path to a tiny deterministic ONNX model with the real backbone's contract."""
    return make_tiny_onnx(tmp_path_factory.mktemp("backbone") / "tiny_backbone.onnx", seed=0)


def _tree_digest(base: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``base``."""
    return {str(p.relative_to(base)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(base.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="session")
def tiny_world(tiny_backbone, tmp_path_factory):
    """One trained synthetic world per session, shared READ-ONLY by the modules that only read it:

    ``root`` the default BUSI-like tree (make_busi_tree seed 0), ``cache`` its feature cache (raw view
    only), ``model`` the stem of a tiny multi-task model trained on it (web_support.tiny_model: mtl head,
    16 hidden, 30 epochs, lr 1e-3, batch 8, seed 0), ``backbone`` the tiny ONNX backbone, ``images``
    every image of the tree (discovery order). A test that must change a file copies it first; a
    file written, changed or removed under the world fails the session at teardown."""
    from web_support import synth_images, tiny_model

    base = tmp_path_factory.mktemp("tiny_world")
    stem = tiny_model(base, tiny_backbone)
    world = {"base": base, "root": base / "busi", "cache": base / "cache.h5", "model": stem,
             "backbone": tiny_backbone, "images": synth_images(base)}
    before = _tree_digest(base)
    yield world
    after = _tree_digest(base)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared tiny_world (copy files before changing them): {changed[:5]}"


@pytest.fixture(scope="session")
def masks_cache(tiny_backbone, tmp_path_factory) -> Path:
    """A synthetic tree (12/20/16 images, seed 3) extracted with raw + the mask views (roi, masked,
    mask), shared READ-ONLY by the training tests (test_experiments, test_faults_model)."""
    from busi_lite.features.cache import extract
    from busi_lite.features.views import VIEWS

    root = tmp_path_factory.mktemp("masks_busi")
    make_busi_tree(root, n_per_class=(12, 20, 16), seed=3)
    out = tmp_path_factory.mktemp("masks_cache") / "c.h5"
    extract(root, out, tiny_backbone, views=VIEWS, progress=False, log=lambda m: None)
    before = _tree_digest(out.parent)
    yield out
    assert _tree_digest(out.parent) == before, "a test changed the shared masks_cache (copy it first)"


@pytest.fixture(scope="session")
def _busi_tree_master(tmp_path_factory):
    """The default tree, drawn once per session; never modified (tests get copies)."""
    root = tmp_path_factory.mktemp("busi_master") / "busi"
    return root, make_busi_tree(root, seed=0)


@pytest.fixture
def busi_tree(_busi_tree_master, tmp_path):
    """A fresh BUSI-like tree (default sizes, seed 0, extras): returns ``(root, info)``.

    A byte-identical copy of the session's master tree (drawing one takes ~0.7 s), so a
    test may change or delete its files freely."""
    master, info = _busi_tree_master
    root = tmp_path / "busi"
    shutil.copytree(master, root)
    info = copy.deepcopy(info)
    info["root"] = root
    return root, info


# --------------------------------------------------------------------------- #
# Real assets
# --------------------------------------------------------------------------- #
def _require_real() -> bool:
    return os.environ.get("BUSI_LITE_REQUIRE_REAL", "").strip() == "1"


def _unavailable(msg: str):
    if _require_real():
        pytest.fail(f"{msg} (BUSI_LITE_REQUIRE_REAL=1, so this is an error, not a skip)")
    pytest.skip(msg)


def _env_path(var: str, what: str) -> Path:
    value = os.environ.get(var, "").strip()
    if not value:
        _unavailable(f"{var} is not set; point it at {what} to run this test")
    path = Path(value).expanduser()
    if not path.exists():
        _unavailable(f"{var}={value!r} does not exist; point it at {what}")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real BUSI root (``$BUSI_LITE_DATA``) with normal/benign/malignant folders."""
    path = _env_path("BUSI_LITE_DATA", "the BUSI root (folders normal/, benign/, malignant/)")
    missing = [c for c in CLASSES if not (path / c).is_dir()]
    if missing:
        _unavailable(f"BUSI_LITE_DATA={str(path)!r} has no class folder(s) {missing}")
    return path


@pytest.fixture(scope="session")
def real_backbone() -> Path:
    """The real MobileNetV2 ONNX backbone (``$BUSI_LITE_BACKBONE``)."""
    path = _env_path("BUSI_LITE_BACKBONE", "the MobileNetV2 .onnx backbone file")
    if not path.is_file():
        _unavailable(f"BUSI_LITE_BACKBONE={str(path)!r} is not a file")
    return path


REAL_VIEWS = ("roi", "masked", "mask")  # the mask-fused views; the flip/box views are tested on synthetic data
REAL_SITE_VIEWS = ("flip",)             # the default model averages each image with its mirror

# The two real extractions run in ONE background process started right after collection, when a
# collected test needs them: they overlap the synthetic tests (mostly one core) instead of stopping
# the run for ~25 s. The fixtures below wait for it; each extraction is the same call as before.
_EXTRACT = """
import json, sys
from busi_lite.features import cache as F
for data, out, views in json.loads(sys.argv[1]):
    s = F.extract(data, out, backbone=sys.argv[2], views=views, progress=False, log=lambda m: None)
    print(json.dumps([out, s], default=str), flush=True)
"""
_BACKGROUND: dict = {}


def _real_jobs(items) -> list[tuple[str, str, str, tuple]]:
    """(fixture, data variable, cache file name, views) of the real extractions the collected tests need."""
    wanted = {n for item in items for n in getattr(item, "fixturenames", ())}
    jobs = [("real_site_cache", "BUSI_LITE_SITE_DATA", "busbra-dev_features.h5", REAL_SITE_VIEWS),
            ("real_cache", "BUSI_LITE_DATA", "busi_features.h5", REAL_VIEWS)]
    return [j for j in jobs if j[0] in wanted and os.environ.get(j[1], "").strip()]


def pytest_collection_finish(session):
    import json
    import subprocess
    import tempfile

    backbone = os.environ.get("BUSI_LITE_BACKBONE", "").strip()
    jobs = _real_jobs(session.items)   # after -k/-m deselection: only what will run
    if not jobs or not backbone or not Path(backbone).is_file():
        return   # the fixtures say what is missing (skip, or fail with BUSI_LITE_REQUIRE_REAL=1)
    tmp = Path(tempfile.mkdtemp(prefix="busi-lite-real-"))
    args = [(os.environ[var].strip(), str(tmp / name), list(views)) for _, var, name, views in jobs]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", _EXTRACT, json.dumps(args), backbone], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _BACKGROUND.update(proc=proc, tmp=tmp, jobs={fx: a for (fx, *_), a in zip(jobs, args)}, done=None)


def _background_result(fixture: str, data: Path, backbone: Path):
    """(cache path, extract summary) of the background extraction for ``fixture``, or None if none ran
    for these assets (the fixture then extracts itself)."""
    import json

    job = _BACKGROUND.get("jobs", {}).get(fixture)
    if job is None or Path(job[0]) != data or Path(os.environ.get("BUSI_LITE_BACKBONE", "").strip()) != backbone:
        return None
    if _BACKGROUND["done"] is None:
        out, err = _BACKGROUND["proc"].communicate()
        if _BACKGROUND["proc"].returncode != 0:
            raise RuntimeError(f"the background extraction of the real data failed:\n{err[-3000:]}")
        _BACKGROUND["done"] = {o: s for o, s in (json.loads(line) for line in out.splitlines() if line.strip())}
    return Path(job[1]), _BACKGROUND["done"][job[1]]


@pytest.fixture(scope="session")
def real_cache(real_data, real_backbone, tmp_path_factory):
    """The real BUSI extracted once per session (raw + REAL_VIEWS): ``(cache path, extract summary)``.

    Read-only for the tests, except test_real's rerun, which re-extracts into it and must reuse every row."""
    from busi_lite.features import cache as F

    done = _background_result("real_cache", real_data, real_backbone)
    if done is not None:
        return done
    out = tmp_path_factory.mktemp("real") / "busi_features.h5"
    summary = F.extract(real_data, out, backbone=real_backbone, views=REAL_VIEWS, progress=False,
                        log=lambda m: None)
    return out, summary


@pytest.fixture(scope="session")
def real_site() -> Path:
    """$BUSI_LITE_SITE_DATA: the BUS-BRA-dev folder; unset -> skip, or fail with BUSI_LITE_REQUIRE_REAL=1
    (.ci/run sets both)."""
    value = os.environ.get("BUSI_LITE_SITE_DATA", "").strip()
    if not value:
        msg = "BUSI_LITE_SITE_DATA is not set; point it at ../shared/datasets/busbra-dev to run this test"
        _unavailable(msg)
    path = Path(value).expanduser()
    if not (path / "benign").is_dir() or not (path / "malignant").is_dir():
        msg = f"BUSI_LITE_SITE_DATA={value!r} has no benign/ and malignant/ folders"
        _unavailable(msg)
    return path


@pytest.fixture(scope="session")
def real_site_cache(real_site, real_backbone, tmp_path_factory) -> Path:
    """BUS-BRA-dev extracted once per session (raw + REAL_SITE_VIEWS), read-only for the tests."""
    from busi_lite.features import cache as F

    done = _background_result("real_site_cache", real_site, real_backbone)
    if done is not None:
        return done[0]
    out = tmp_path_factory.mktemp("real_site") / "busbra-dev_features.h5"
    F.extract(real_site, out, backbone=real_backbone, views=REAL_SITE_VIEWS, progress=False, log=lambda m: None)
    return out


# --------------------------------------------------------------------------- #
# Summary: say which assets were missing (the reason behind the skips)
# --------------------------------------------------------------------------- #
ASSETS = (("BUSI_LITE_DATA", "BUSI root"), ("BUSI_LITE_BACKBONE", "ONNX backbone"),
          ("BUSI_LITE_SITE_DATA", "BUS-BRA-dev root"))


def missing_assets() -> list[str]:
    """What the skipped tests wait for: unset/missing asset variables, a missing chromium or Playwright."""
    out = [f"${var} ({what})" for var, what in ASSETS
           if not os.environ.get(var, "").strip() or not Path(os.environ[var]).expanduser().exists()]
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        out.append("a chromium binary (browser tests)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        out.append("the playwright package (browser tests)")
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = len(terminalreporter.stats.get("skipped", []))
    missing = missing_assets()
    if skipped and missing:
        terminalreporter.write_line(f"{skipped} skipped: missing {', '.join(missing)} "
                                    "(-rs lists each skip and its reason; BUSI_LITE_REQUIRE_REAL=1 makes them fail)")


def _close_browser():
    support = sys.modules.get("web_support")
    if support is not None:
        support.close_browser()


@pytest.fixture(scope="module", autouse=True)
def _module_browser():
    """The browser tests of one module share one Chromium (tests/web_support.py); it closes with the
    module, because a running Playwright leaves an asyncio loop marked running (asyncio.run then fails)."""
    yield
    _close_browser()


def pytest_sessionfinish(session, exitstatus):
    """Stop the background extraction if no test waited for it; remove its caches."""
    _close_browser()
    proc = _BACKGROUND.get("proc")
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        shutil.rmtree(_BACKGROUND["tmp"], ignore_errors=True)
