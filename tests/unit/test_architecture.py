"""The shape of the code: no import circles, short functions, phases of one orchestrator, no compiled code."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "lftrain"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported(module: str, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> list[str]:
    """The lftrain modules an import statement loads (`from pkg import sub` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    base = node.module or ""
    if node.level:  # relative: from the module's package upwards
        package = module.split(".") if mods[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
            if f"{base}.{a.name}" in mods or base in mods]


class _Imports(ast.NodeVisitor):
    """Every import that runs: at the top and inside functions alike; not those under `if TYPE_CHECKING:`."""

    def __init__(self, module: str, mods: dict[str, Path]) -> None:
        self.module, self.mods, self.found = module, mods, set()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node) -> None:
        self.found.update(m for m in _imported(self.module, node, self.mods) if m != self.module)

    visit_ImportFrom = visit_Import


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        visitor = _Imports(name, mods)
        visitor.visit(ast.parse(path.read_text()))
        graph[name] = visitor.found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circles_in_src():
    graph = import_graph()
    assert len(graph) > 100 and "lftrain.orchestrator.run" in graph["lftrain.orchestrator.stages"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def _functions():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node, node.end_lineno - node.lineno + 1


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({length} lines)" for p, n, length in _functions()
            if length > 80]
    assert not long, long


def test_the_orchestrator_phases_are_short():
    phases = {"prepare_inputs", "open_session", "build_model", "build_optimiser", "fit_model", "finish", "train_run"}
    lengths = {n.name: length for p, n, length in _functions() if p == PACKAGE / "orchestrator" / "run.py"}
    assert phases <= set(lengths) and all(lengths[name] <= 60 for name in phases), lengths


def test_no_compiled_code_on_any_path():
    """No C source ships, nothing calls a compiler, and ctypes only reaches system libraries' documented entry
    points (the allocator's release call; prctl so that torchrun's workers die with their launcher)."""
    assert not [p for p in PACKAGE.rglob("*") if p.suffix in (".c", ".h", ".cpp", ".so")]
    uses_ctypes = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "ctypes" in p.read_text())
    assert uses_ctypes == ["accel/allocator.py", "training/distributed.py"], uses_ctypes
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "-march=native" not in text and '"cc"' not in text and "'cc'" not in text, path
