"""The data stage: `dvc repro` over dvc.yaml in a per-recipe DVC workspace.

The workspace ($VLMFORGE_HOME/data/<recipe>) holds dvc.yaml (the project's, with
code dependencies made absolute), params.yaml (the recipe's data section plus the
`sources` it uses, one generate stage each) and the outputs. DVC decides what to
rebuild; the content hashes in dvc.lock are the data version that every training
run records.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

import registry
from components.data.mix import used_sources
from components.data.report import build_report, render_markdown, sample_grid
from components.data.version import DataVersion, read_version
from components.recipe import Recipe
from flows.environment import PROJECT_ROOT, vlmforge_home
from flows.lineage import log_data_stage, publish_markdown


class DataStageError(RuntimeError):
    """`dvc repro` failed; the message carries the failing stage's own error."""


def workspace_for(recipe: Recipe) -> Path:
    return vlmforge_home() / "data" / recipe.name


def current_data(recipe: Recipe) -> DataVersion:
    """The data version the recipe's data stage last produced (without running it)."""
    ws = workspace_for(recipe)
    if not (ws / "dvc.lock").exists():
        raise LookupError(f"no data for recipe {recipe.name!r}: run `vlmforge data --recipe ...` first")
    return read_version(ws)


def render_dvc_yaml(source: Path = PROJECT_ROOT / "dvc.yaml", *, synthetic: bool = True,
                    datasets: bool = False) -> str:
    """The project's dvc.yaml with code dependencies pointing into the project; the mix stage
    depends on the synthetic sources' shards only when there are some, and on the datasets'
    ingested shards when there are some."""
    spec = yaml.safe_load(source.read_text())
    for entry in spec["stages"].values():
        stage = entry.get("do", entry)  # a foreach stage's template
        stage["deps"] = [p for d in stage.get("deps", []) for p in _code_deps(d)]
    mix = spec["stages"]["shards"]["deps"]
    if not synthetic:
        mix.remove("data/sources")
    if datasets:
        mix.insert(0, "data/datasets")
    return yaml.safe_dump(spec, sort_keys=False)


def _code_deps(dep: str) -> list[str]:
    """A code dependency as absolute paths (a package folder as its .py files, so compiled
    caches never change its hash); data dependencies as they are."""
    if not dep.startswith("components/"):
        return [dep]
    path = PROJECT_ROOT / dep
    return sorted(str(f) for f in path.rglob("*.py")) if path.is_dir() else [str(path)]


def prepare_workspace(recipe: Recipe) -> Path:
    ws = workspace_for(recipe)
    ws.mkdir(parents=True, exist_ok=True)
    if not (ws / ".dvc").exists():
        _dvc(ws, "init", "--no-scm", "--quiet")
        _dvc(ws, "config", "core.analytics", "false")
    _write_if_changed(ws / "dvc.yaml", render_dvc_yaml(synthetic=bool(used_sources(recipe.data)),
                                                        datasets=bool(recipe.data.datasets)))
    data = recipe.data.stage_params()
    data["datasets"] = {name: spec.resolved(Path.cwd()).model_dump(mode="json")
                        for name, spec in recipe.data.datasets.items()}
    params = {"data": data, "sources": used_sources(recipe.data)}
    _write_if_changed(ws / "params.yaml", yaml.safe_dump(params, sort_keys=True))
    return ws


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _dvc(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise DataStageError(f"`dvc {' '.join(args)}` failed in {ws}:\n{tail}")
    return proc


@task(name="dvc-repro")
def dvc_repro(recipe: Recipe) -> dict:
    """Run the data stages; DVC skips the ones whose inputs did not change."""
    logger = get_run_logger()
    ws = prepare_workspace(recipe)
    proc = _dvc(ws, "repro")
    for line in proc.stdout.strip().splitlines():
        logger.info(line)
    return asdict(read_version(ws))


def publish_data_report(recipe: Recipe, data: DataVersion, run_id: str) -> Path:
    """The data report (counts, quarantine, sample grid) as files in the workspace's report/,
    MLflow artifacts of the data run (data_report/) and a Prefect markdown artifact."""
    out = Path(data.workspace) / "report"
    out.mkdir(exist_ok=True)
    markdown = render_markdown(build_report(Path(data.workspace) / "data"), data.version,
                               grid_name="data_report/samples.png")
    (out / "data_report.md").write_text(markdown)
    sample_grid(data.shards).save(out / "samples.png")
    registry.log_artifact(out, "data_report", run_id=run_id)
    publish_markdown(f"{recipe.name}-data-report", markdown,
                     description=f"{recipe.name}: data version {data.version}")
    return out


@flow(name="data")
def data_flow(recipe: Recipe, parent_run_id: str | None = None) -> DataVersion:
    """Generate, validate and tokenise the recipe's data; log its version and report to MLflow."""
    data = DataVersion(**dvc_repro(recipe))
    run_id = log_data_stage(recipe, data, parent_run_id)
    publish_data_report(recipe, data, run_id)
    get_run_logger().info("data version %s (%s)", data.version, data.hashes)
    return data
