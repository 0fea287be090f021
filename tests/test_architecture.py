"""The house rules of the code base, checked on the source (no imports, no assets).

Every import counts: module level, inside functions and under TYPE_CHECKING.

- the folders are the layers; a module imports only its own layer and the layers below it
  (LAYERS, lowest first), and no module imports the top package ``busi_lite`` (the Python API);
- no import cycle between modules (the one exception: a package's ``__init__`` importing its own
  submodules, which is how the CLI registers its commands lazily and the heads register themselves);
- serving (predict, flags, overlays, the web page, their CLI commands) never reaches training code;
- no module imports a private name (``_x``) from another module: what another module needs is public;
- the head kind is compared nowhere outside busi_lite/heads/ (the registry decides);
- no module much over 500 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "busi_lite"
LAYERS = ["common", "io", "features", "heads", "model", "serving", "evaluation", "training", "report", "web",
          "cli"]
TRAINING = ("busi_lite.training",)
SERVING = ("busi_lite.serving", "busi_lite.web", "busi_lite.cli.predict", "busi_lite.cli.serve")
MAX_LINES = 540


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(busi_lite module, names imported from it) for every import statement in ``name``."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod == "busi_lite" or mod.startswith("busi_lite."):
                names = [a.name for a in node.names]
                subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
                found.append((mod, [n for n in names if f"{mod}.{n}" not in MODULES]))
                found.extend((s, []) for s in subs)
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("busi_lite"))
    return found


def _graph() -> dict[str, set[str]]:
    return {n: {m for m, _ in _imports(n, p) if m in MODULES and m != n} for n, p in MODULES.items()}


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer_folder():
    stray = sorted(n for n in MODULES if n != "busi_lite" and _layer(n) is None)
    assert not stray, f"modules outside the layer folders {LAYERS}: {stray}"


def test_imports_flow_down_the_layers():
    bad = []
    for n, deps in _graph().items():
        for d in deps:
            if d == "busi_lite":
                bad.append(f"{n} imports the top package busi_lite (import from the module that defines it)")
            elif n != "busi_lite" and LAYERS.index(_layer(d)) > LAYERS.index(_layer(n)):
                bad.append(f"{n} ({_layer(n)}) imports {d} ({_layer(d)}), a higher layer")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    # a package importing its own submodules (registration) is not a cycle of responsibilities
    g = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in _graph().items()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 1
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles: {cycles}"


def test_the_import_reader_sees_lazy_and_type_checking_imports(tmp_path):
    src = ("from typing import TYPE_CHECKING\n"
           "if TYPE_CHECKING:\n    from busi_lite.serving.prediction import Prediction\n"
           "def f():\n    from busi_lite.serving import inference\n    from . import flags\n")
    (tmp_path / "probe.py").write_text(src)
    found = {m for m, _ in _imports("busi_lite.serving.probe", tmp_path / "probe.py")}
    assert {"busi_lite.serving.prediction", "busi_lite.serving.inference", "busi_lite.serving.flags"} <= found


def test_serving_never_imports_training():
    g = _graph()
    bad = {}
    for n in (m for m in g if m.startswith(SERVING)):
        seen, todo = set(), [n]
        while todo:
            m = todo.pop()
            for d in g.get(m, ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        reach = sorted(d for d in seen if d.startswith(TRAINING))
        if reach:
            bad[n] = reach
    assert not bad, f"serving modules reach training code: {bad}"


def test_no_private_name_crosses_a_module_border():
    bad = []
    for n, p in MODULES.items():
        for mod, names in _imports(n, p):
            bad.extend(f"{n}: from {mod} import {x}" for x in names if x.startswith("_") and not x.startswith("__"))
    assert not bad, "private names imported across modules (make them public):\n" + "\n".join(sorted(bad))


def test_head_kind_is_compared_only_in_the_registry():
    kinds = "plain|mtl|logreg|box"
    pattern = re.compile(rf"""(\bhead\w*|\.kind)\s*[!=]=\s*["']({kinds})["']|["']({kinds})["']\s*[!=]=\s*(\bhead|\w+\.kind)""")
    hits = []
    for p in PKG.rglob("*.py"):
        if "heads" in p.relative_to(PKG).parts:
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line) or re.search(r"""\.get\(["']head["']\)\s*[!=]=""", line):
                hits.append(f"{p.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert not hits, "head kind compared outside busi_lite/heads/:\n" + "\n".join(hits)


def test_modules_stay_small():
    big = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
