"""The layout stays honest: components/ never imports Prefect or MLflow; the CLI starts light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def test_components_import_neither_prefect_nor_mlflow():
    loaded = _imported_after(_modules("components"))
    assert "prefect" not in loaded
    assert "mlflow" not in loaded


def test_cli_help_imports_no_heavy_library():
    loaded = _imported_after(["flows.cli"], "sys.modules['flows.cli'].build_parser().format_help()\n")
    assert not loaded & {"torch", "transformers", "prefect", "mlflow", "dvc", "great_expectations"}


def test_registry_package_imports_mlflow_lazily():
    assert "mlflow" not in _imported_after(["registry"])
