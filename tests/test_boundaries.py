"""Package import boundaries (STYLE.md, DESIGN.md): who may import whom, no import cycles,
and every module of engine/ importable without the optional accelerator libraries.

Layers, bottom up: stream/ and models/ (each on its own); engine/wire/ and engine/store/
(torch-free); engine/backends/ (models); engine/ (stream, models, backends, wire, store);
training/ (all of those); benchmarks/ (everything). The one declared exception: `actstream bench`
(training/commands/bench.py) starts the benchmarks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "models", "engine", "training", "benchmarks")
# (package prefix, project packages it may import, outside libraries it must not import);
# the longest matching prefix rules.
RULES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "stream": (("stream",), frozenset({"torch", "zmq", "prometheus_client"})),
    "models": (
        ("models",),
        frozenset(
            {"threading", "socket", "av", "zmq", "time", "prometheus_client"}
            | {"pathlib", "os", "subprocess"}
        ),
    ),
    "engine.wire": (("engine.wire", "engine.loader", "engine.metrics"), frozenset({"torch"})),
    "engine.store": (
        ("engine.store", "engine.loader", "engine.metrics", "engine.versions"),
        frozenset({"torch"}),
    ),
    "engine.backends": (
        ("engine.backends", "engine.checkpoint", "engine.cpu", "engine.loader", "engine.versions")
        + ("models",),
        frozenset(),
    ),
    "engine": (("engine", "stream", "models"), frozenset()),
    "training": (("training", "engine", "stream", "models"), frozenset()),
    "benchmarks": (PACKAGES, frozenset()),
}
DECLARED_EXCEPTIONS = {("training.commands.bench", "benchmarks.quick")}
ACCELERATOR_LIBRARIES = ("tensorrt", "torch_tensorrt")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if ".venv" not in p.parts
    }


def imports_of(path: Path) -> set[str]:
    """Every absolute import in a file, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the project modules and outside top-level libraries it imports."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in imports_of(path):
            if imported.split(".")[0] in PACKAGES:
                if imported in modules:  # `from pkg import module` names a module
                    edges.add(imported)
                elif imported.rsplit(".", 1)[0] in modules:
                    edges.add(imported.rsplit(".", 1)[0])
            else:
                edges.add(imported.split(".")[0])
        edges.discard(name)
        graph[name] = edges
    return graph


def _rule(module: str) -> tuple[tuple[str, ...], frozenset[str]]:
    best = max((p for p in RULES if module == p or module.startswith(p + ".")), key=len)
    return RULES[best]


def _inside(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def boundary_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        allowed, forbidden = _rule(module)
        for target in sorted(edges):
            if target.split(".")[0] in PACKAGES:
                if not _inside(target, allowed) and (module, target) not in DECLARED_EXCEPTIONS:
                    bad.append(f"{module} imports {target}")
            elif target in forbidden:
                bad.append(f"{module} imports {target}")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one project module (Tarjan)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_package_imports_only_what_its_layer_allows():
    assert boundary_violations(import_graph()) == []


def test_no_import_cycle_between_modules():
    assert import_cycles(import_graph()) == []


def test_the_checks_fail_on_deliberate_violations():
    graph = {k: set(v) for k, v in import_graph().items()}
    graph["stream.frames"].add("torch")  # stream/ never imports torch
    graph["engine.wire.events"].add("models.fastback")  # the wire is torch-free
    graph["engine.tracker"].add("training.metrics")  # an arrow that runs up
    graph["training.commands.synth"].add("benchmarks.quick")  # not the declared exception
    assert boundary_violations(graph) == [
        "engine.tracker imports training.metrics",
        "engine.wire.events imports models.fastback",
        "stream.frames imports torch",
        "training.commands.synth imports benchmarks.quick",
    ]
    graph["engine.segmenter"].add("engine.detector")  # the detector imports the segmenter
    cycles = import_cycles(graph)
    assert any({"engine.detector", "engine.segmenter"} <= set(c) for c in cycles), cycles


def import_all_blocked(modules: list[str], path: Path = ROOT) -> subprocess.CompletedProcess:
    """Imports `modules` in a fresh interpreter (from `path`) where `import tensorrt` and
    `import torch_tensorrt` fail; it exits non-zero if one cannot be imported or if one of
    them pulled the libraries in anyway."""
    script = (
        "import importlib, sys\n"
        f"for name in {ACCELERATOR_LIBRARIES!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        f"loaded = [n for n in {ACCELERATOR_LIBRARIES!r} if sys.modules.get(n) is not None]\n"
        "assert not loaded, loaded\n"
        f"print('imported', {len(modules)})\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )


def test_every_engine_module_imports_with_the_accelerator_libraries_blocked():
    engine_modules = sorted(m for m in project_modules() if m.split(".")[0] == "engine")
    assert len(engine_modules) > 20
    done = import_all_blocked(engine_modules)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"imported {len(engine_modules)}" in done.stdout


def test_the_import_check_fails_on_a_module_that_needs_tensorrt(tmp_path):
    (tmp_path / "needs_trt.py").write_text("import tensorrt\n")
    done = import_all_blocked(["needs_trt"], tmp_path)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr
