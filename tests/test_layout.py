"""The layout stays honest: components/ never imports Prefect, MLflow or flows/; no import
cycle between modules or between components/ sub-packages; no module imports another
module's private names; stages never import commands; flows/ has a few files at its top,
the rest in rooms by role; the tests mirror the source tree; the CLI starts light."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "flows", "registry")


def _modules(package: str) -> list[str]:
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__").removesuffix(".__main__")
        for p in (ROOT / package).rglob("*.py")
    )


def _imported_after(modules: list[str], code: str = "") -> set[str]:
    probe = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n{code}"
             "print(','.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().split(","))


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the project modules it imports (anywhere in its body), and every import of a
    private name (``_x``) from another project module."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    edges: dict[str, set[str]] = defaultdict(set)
    private: list[str] = []
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in files:
                        edges[module].add(f"{base}.{alias.name}")
                    elif base in files:
                        edges[module].add(base)
                        if alias.name.startswith("_") and base != module:
                            private.append(f"{module} imports {base}.{alias.name}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def folder(module: str) -> str:
    """components.<sub> for components' sub-packages and modules, else the top package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "components" else parts[0]


def test_no_import_cycle_between_modules():
    edges, _ = import_graph()
    assert cycles(edges) == []


def test_no_import_cycle_between_folders():
    edges, _ = import_graph()
    folders: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        folders[folder(a)].update(folder(b) for b in targets if folder(b) != folder(a))
    assert cycles(folders) == []


def test_no_module_imports_another_modules_private_names():
    _, private = import_graph()
    assert private == []


def test_dependencies_point_one_way():
    """components -> nothing above it; registry -> components only; stages -> never commands."""
    edges, _ = import_graph()
    wrong = [(a, b) for a, targets in edges.items() for b in targets
             if (a.startswith("components") and not b.startswith("components"))
             or (a.startswith("registry") and b.startswith("flows"))
             or (a.startswith("flows.stages") and b.startswith(("flows.commands", "flows.cli")))
             or (a.startswith("flows.bench") and b.startswith("flows.cli"))]
    assert wrong == []


def test_flows_top_level_holds_only_the_wiring():
    top = sorted(p.name for p in (ROOT / "flows").glob("*.py"))
    assert len(top) <= 12, top
    assert {"stages", "commands", "bench"} <= {p.name for p in (ROOT / "flows").iterdir() if p.is_dir()}


def test_tests_mirror_the_source_tree():
    """tests/<folder>/ exists in the source too (plus the cross-cutting suites: integration/,
    security/ and reliability/)."""
    cross_cutting = {"integration", "security", "reliability"}
    for folder_path in (p for p in (ROOT / "tests").rglob("*") if p.is_dir()):
        rel = folder_path.relative_to(ROOT / "tests")
        if rel.parts[0] in cross_cutting or "__pycache__" in rel.parts or "hub_configs" in rel.parts:
            continue
        assert (ROOT / rel).is_dir(), f"tests/{rel} has no source folder {rel}"


def test_components_import_neither_prefect_nor_mlflow():
    loaded = _imported_after(_modules("components"))
    assert "prefect" not in loaded
    assert "mlflow" not in loaded


def test_cli_help_imports_no_heavy_library():
    loaded = _imported_after(["flows.cli"], "sys.modules['flows.cli'].build_parser().format_help()\n")
    assert not loaded & {"torch", "transformers", "prefect", "mlflow", "dvc", "great_expectations"}


def test_registry_package_imports_mlflow_lazily():
    assert "mlflow" not in _imported_after(["registry"])
