"""Package import boundaries (STYLE.md): stream/ never imports torch; models/ never touches
threads, sockets, av or files; engine/ never imports training/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "stream": {"torch", "models", "engine", "training", "zmq", "prometheus_client"},
    "models": {
        "threading",
        "socket",
        "av",
        "zmq",
        "time",
        "stream",
        "engine",
        "training",
        "prometheus_client",
        "pathlib",
        "os",
        "subprocess",
    },
    "engine": {"training"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_their_boundary(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for root in imported_roots(path) & FORBIDDEN[package]:
            bad.append(f"{path.relative_to(ROOT)} imports {root}")
    assert not bad, bad


def test_importing_engine_does_not_need_optional_accelerator_libraries():
    import importlib
    import sys

    for name in ("tensorrt", "torch_tensorrt", "onnxruntime"):
        assert name not in sys.modules or name == "onnxruntime"
    importlib.import_module("engine.cli")
    assert "tensorrt" not in sys.modules
