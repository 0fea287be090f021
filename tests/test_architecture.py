"""The house rules of the code base, checked on the source (no imports, no assets).

- no import cycle between busi_lite modules (module-level imports);
- serving (predict, flags, overlays, the web page) never imports training code, not even lazily;
- the head kind is compared nowhere outside busi_lite/heads/ (the registry decides);
- no module much over 500 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "busi_lite"
TRAINING = {"busi_lite.training.core", "busi_lite.training.experiments", "busi_lite.training.box"}
SERVING = {"busi_lite.serving.inference", "busi_lite.serving.flags", "busi_lite.serving.overlay", "busi_lite.serving.geometry",
           "busi_lite.features.preprocess", "busi_lite.serving.boxes", "busi_lite.web.app", "busi_lite.web.uploads",
           "busi_lite.cli.predict", "busi_lite.cli.serve"}
MAX_LINES = 540


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """busi_lite modules imported by ``name`` (resolving relative imports)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("busi_lite"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("busi_lite"))
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    mods = _modules()
    return {n: {m for m in _imports(n, p, top_level_only) if m in mods and m != n} for n, p in mods.items()}


def test_no_import_cycle_at_module_level():
    g = _graph(top_level_only=True)
    # a package importing its own submodules (registration) is not a cycle of responsibilities
    g = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in g.items()}
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


def test_serving_never_imports_training():
    g = _graph(top_level_only=False)  # lazy imports inside functions count too
    bad = {}
    for n in SERVING & set(g):
        seen, todo = set(), [n]
        while todo:
            m = todo.pop()
            for d in g.get(m, ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        if seen & TRAINING:
            bad[n] = sorted(seen & TRAINING)
    assert not bad, f"serving modules reach training code: {bad}"


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
