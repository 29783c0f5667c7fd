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
    points (the allocator's release call; prctl so that torchrun's workers die with their launcher; madvise to drop
    a checkpoint's pages after a converted load)."""
    assert not [p for p in PACKAGE.rglob("*") if p.suffix in (".c", ".h", ".cpp", ".so")]
    uses_ctypes = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "ctypes" in p.read_text())
    assert uses_ctypes == ["accel/allocator.py", "models/quantized.py", "training/distributed.py"], uses_ctypes
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "-march=native" not in text and '"cc"' not in text and "'cc'" not in text, path


# ---- layers that run one way ------------------------------------------------------------------------------------
# Bottom to top. A module may import from its own layer and the layers below it; an import of a higher layer is
# upward (allowed only in UPWARD, each with its reason). Packages are the layers; the foundation is a few modules.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "files", "extras", "hub", "registry", "progress"),  # no lftrain imports but each other
    ("config",),  # the recipe schema: it knows no plug-in (they register their sections: registry.SECTIONS)
    ("data",),  # reading and validating rows, batching, token caches
    ("models",),  # loading, adapting, saving models; precision
    ("evaluation",),  # metrics, intervals, calibration, evidence of a split's outputs
    ("tasks",),  # what a model predicts
    ("methods",),  # how its parameters learn
    ("accel",),  # the speed levers behind one seam
    ("training",),  # the one loop, checkpoints, run directories, distribution, privacy, tracking
    ("plan",),  # the memory plan of a recipe, before any weight loads
    ("reports",),  # the HTML report, model and data cards, from a run directory's files
    ("checks",),  # the data checks over a recipe's data
    ("orchestrator",),  # a recipe into runs, each in phases around fit()
    ("runs",),  # finished runs: loaded, predicted, exported, compared
    ("tuning",),  # searches of ordinary runs
    ("serve", "ui"),  # the server and the web UI
    ("api",),  # the public functions
    ("cli", "__main__"),  # `lft`
)
UPWARD: dict[tuple[str, str], str] = {}  # (module, imported module) -> why


def _layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # `lftrain` itself: its lazy attributes reach the api
        return len(LAYERS) - 1
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: in no layer of LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if _layer_of(b) > _layer_of(a))


def test_the_layer_finder_finds_an_upward_import():
    assert upward_imports({"lftrain.config.schema": {"lftrain.tasks.base", "lftrain.errors"},
                           "lftrain.tasks.base": {"lftrain.config.base"}}) == [("lftrain.config.schema",
                                                                                "lftrain.tasks.base")]


def test_layers_run_one_way():
    ups = upward_imports(import_graph())
    print(f"{len(ups)} upward imports" + "".join(f"\n  {a} -> {b}: {UPWARD.get((a, b), 'NOT ALLOWED')}"
                                                  for a, b in ups))
    assert len(UPWARD) <= 5
    assert [u for u in ups if u not in UPWARD] == []


# ---- plug-ins are declared, not named ---------------------------------------------------------------------------

def _plugin_names() -> dict[str, set[str]]:
    """Registered task and method type names -> the modules allowed to spell them (where they are registered)."""
    import inspect

    from lftrain.methods import METHODS
    from lftrain.tasks import TASKS

    out: dict[str, set[str]] = {}
    for registry in (TASKS, METHODS):
        for name, cls in registry.items():
            out[name] = {inspect.getmodule(cls).__name__}
    return out


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant that is not a docstring (line, value)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_task_or_method_name_outside_its_own_module():
    """Other layers read what a task or method declares; a type name spelt elsewhere is a table to forget."""
    names = _plugin_names()
    found = []
    for module, path in _modules().items():
        for line, value in _string_literals(ast.parse(path.read_text())):
            if value in names and module not in names[value]:
                found.append(f"{path.relative_to(SRC)}:{line} '{value}'")
    assert len(names) >= 15 and not found, found
