"""The engine's layers, held to the code: cli|tui -> jobs -> evaluation|student -> knowledge -> llm -> data -> store.

Every import counts, the ones inside functions too (a lazy import is still a dependency). A module
may import its own layer or a lower one; the shared vocabulary (types, errors, progress, config,
machine, embeddings) is importable from everywhere and imports nothing above store. Module-level cycles are
refused in every layer. The checker is tested on a made-up graph first, so a broken checker cannot
pass the real code silently.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPS = {"engine": "kdbundle.engine", "store": "kdbundle.store", "tui": "kdbundle.tui"}

# Layer by module-name prefix, longest prefix first; higher numbers sit above lower ones.
LAYERS: dict[str, int] = {
    "kdbundle.store": 0,
    "kdbundle.engine.types": 0, "kdbundle.engine.errors": 0, "kdbundle.engine.progress": 0,
    "kdbundle.engine.config": 0, "kdbundle.engine.embeddings": 0, "kdbundle.engine.minilm": 0, "kdbundle.engine.pairs": 0,
    "kdbundle.engine.threads": 0, "kdbundle.engine.machine": 0, "kdbundle.engine.files": 0, "kdbundle.engine.schema": 0,
    "kdbundle.engine.tuned_encoder": 0, "kdbundle.engine.pair_evidence": 0,
    "kdbundle.engine.data": 1,
    "kdbundle.engine.llm": 2,
    "kdbundle.engine.knowledge": 3,
    "kdbundle.engine.evaluation": 4, "kdbundle.engine.student": 4,
    "kdbundle.engine.jobs": 5, "kdbundle.engine.browse": 5,
    "kdbundle.engine.cli": 6, "kdbundle.tui": 6,
    "kdbundle.engine": 6,  # the package face itself
}
NAMES = {0: "store/shared", 1: "data", 2: "llm", 3: "knowledge", 4: "evaluation|student", 5: "jobs", 6: "cli|tui"}

# The one sanctioned reach upward: the distillation judge scores a teacher's answer with the very
# metrics evaluation reports (a pure leaf module: it imports only engine.types).
ALLOWED = {("kdbundle.engine.knowledge", "kdbundle.engine.evaluation.metrics")}


def layer(module: str) -> int | None:
    best = None
    for prefix, n in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return LAYERS[best] if best else None


def module_files() -> dict[str, Path]:
    out = {}
    for folder, top in TOPS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([top, *parts])] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every kdbundle module `module` imports, wherever in the file the import statement is."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
    return {m for m in found if m.startswith("kdbundle.") and m != module}


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        ls = layer(src)
        for dst in sorted(targets):
            ld = layer(dst)
            if ls is None or ld is None or ld <= ls:
                continue
            if any(src.startswith(a) and dst == b for a, b in ALLOWED):
                continue
            bad.append(f"{src} ({NAMES[ls]}) imports {dst} ({NAMES[ld]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_faces(graph: dict[str, set[str]], files: dict[str, Path]) -> dict[str, set[str]]:
    # A package's __init__ that only hands its submodules' names on is not a real edge back: drop
    # "package -> own submodule" edges so `pkg.sub -> pkg` (a face import) is not read as a loop.
    return {m: {t for t in ts if not (files[m].name == "__init__.py" and t.startswith(m + "."))}
            for m, ts in graph.items()}


def real_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    graph = {m: {t for t in imports_of(m, p, known) if t in known} for m, p in files.items()}
    return package_faces(graph, files)


# ---------------------------------------------------------------- the checker on a made-up graph


def test_the_checker_sees_an_upward_import_and_a_cycle():
    graph = {
        "kdbundle.engine.data.sessions": {"kdbundle.engine.jobs.runner"},  # data reaching up to jobs
        "kdbundle.engine.jobs.runner": {"kdbundle.engine.data.sessions"},
        "kdbundle.engine.knowledge.distill.common": {"kdbundle.engine.evaluation.metrics"},  # sanctioned
        "kdbundle.engine.evaluation.metrics": set(),
    }
    assert violations(graph) == [
        "kdbundle.engine.data.sessions (data) imports kdbundle.engine.jobs.runner (jobs)"]
    assert cycles(graph) == [["kdbundle.engine.data.sessions", "kdbundle.engine.jobs.runner"]]


def test_a_function_level_import_counts(tmp_path):
    f = tmp_path / "sampling.py"
    f.write_text("def f():\n    from ..evaluation.evaluate import evaluate\n")
    assert imports_of("kdbundle.engine.knowledge.sampling", f, set()) == {"kdbundle.engine.evaluation.evaluate"}


# ---------------------------------------------------------------- the real code


@pytest.fixture(scope="module")
def graph():
    return real_graph()


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer(m) is None] == []


def test_no_module_imports_a_higher_layer(graph):
    assert violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_engine_and_store_never_import_textual():
    offenders = []
    for folder in ("engine", "store"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("textual", "textual_plotext")]
    assert offenders == []
