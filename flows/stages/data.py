"""The data stage: `dvc repro` over dvc.yaml in a per-recipe DVC workspace.

The workspace ($VLMFORGE_HOME/data/<recipe>) holds dvc.yaml (the project's, with
code dependencies made absolute and the evaluation suites' image folders as dependencies
of the contamination stage), params.yaml (the recipe's data section plus the `sources` it
uses, one generate stage each, and the `suites` whose images training must not hold) and
the outputs. DVC decides what to rebuild; the content hashes in dvc.lock are the data
version that every training run records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

import registry
from components.data.mix import used_sources
from components.data.report import (
    DataReport,
    StageView,
    TokenModel,
    build_report,
    render_markdown,
    sample_grid,
    write_plots,
)
from components.data.version import DataVersion, read_version
from components.evaluation.suites import BUILTIN_SUITES, DEFAULT_SUITE, parse_suites
from components.recipe import Recipe
from flows.environment import PROJECT_ROOT, vlmforge_home
from flows.lineage import log_data_stage, publish_markdown, run_link


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
                    datasets: bool = False, suite_deps: list[str] | None = None) -> str:
    """The project's dvc.yaml with code dependencies pointing into the project; the mix stage
    depends on the synthetic sources' shards only when there are some, and on the datasets'
    ingested shards when there are some. With ``suite_deps`` (a workspace's), the
    contamination stage reads params.yaml's `suites` and depends on those suite files."""
    spec = yaml.safe_load(source.read_text())
    for entry in spec["stages"].values():
        stage = entry.get("do", entry)  # a foreach stage's template
        stage["deps"] = [p for d in stage.get("deps", []) for p in _code_deps(d)]
    mix = spec["stages"]["shards"]["deps"]
    if not synthetic:
        mix.remove("data/sources")
    if datasets:
        mix.insert(0, "data/datasets")
    if suite_deps is not None:
        stage = spec["stages"]["contamination"]
        stage["params"].append("suites")
        stage["deps"] += [d for d in suite_deps if d not in stage["deps"]]
    return yaml.safe_dump(spec, sort_keys=False)


def contamination_suites(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The suites the evaluate stage runs (the default one and the recipe's `evaluate.suites`)
    as the contamination stage reads them: the data's own ``split``, an ``images`` folder, or
    an MCQ ``items`` file, paths absolute. ScienceQA reads its split's image folder; MMBench
    (images inside its TSV) is not checked yet."""
    specs = {DEFAULT_SUITE: BUILTIN_SUITES[DEFAULT_SUITE]}
    if recipe.evaluate.suites:
        specs |= parse_suites(recipe.evaluate.suites, f"recipe {recipe.name!r} evaluate.suites",
                              Path.cwd())
    out = {}
    for name, spec in specs.items():
        if spec.needs_data:
            out[name] = {"split": spec.split}
        elif spec.items_format == "scienceqa":
            out[name] = {"images": str(Path(spec.images) / spec.split)}
        elif spec.items_format == "mmbench":
            continue
        elif spec.images is not None:
            out[name] = {"images": spec.images}
        elif spec.items is not None:
            out[name] = {"items": spec.items}
    return out


def suite_dependencies(suites: dict[str, dict[str, str]]) -> list[str]:
    """What the contamination stage reads besides the shards: each image folder, each items
    file and the folders of its images."""
    deps: list[str] = []
    for spec in suites.values():
        if "images" in spec:
            deps.append(spec["images"])
        elif "items" in spec:
            from components.evaluation.official_formats import load_mcq_items

            deps.append(spec["items"])
            deps += sorted({str(Path(it.image).parent) for it in load_mcq_items(spec["items"])
                            if it.image})
    return list(dict.fromkeys(deps))


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
    suites = contamination_suites(recipe)
    _write_if_changed(ws / "dvc.yaml", render_dvc_yaml(synthetic=bool(used_sources(recipe.data)),
                                                        datasets=bool(recipe.data.datasets),
                                                        suite_deps=suite_dependencies(suites)))
    data = recipe.data.stage_params()
    data["datasets"] = {name: spec.resolved(Path.cwd()).model_dump(mode="json")
                        for name, spec in recipe.data.datasets.items()}
    params = {"data": data, "sources": used_sources(recipe.data), "suites": suites}
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


def tower_geometry(recipe: Recipe) -> tuple[int | None, int | None]:
    """The vision tower's input size and patch size as the recipe defines them (inline, or
    its own trained backbone), else from a local model directory's config; None when unknown."""
    m, b = recipe.model, recipe.backbones
    if m.vision == "inline":
        config = m.vision_inline or {}
    elif b is not None and m.vision == f"registered:{b.vision.registered_model}":
        config = {"image_size": 32, "patch_size": 4, **b.vision.config}  # tiny_vision_config's
    elif (Path(m.vision).expanduser() / "config.json").is_file():
        config = json.loads((Path(m.vision).expanduser() / "config.json").read_text())
        config = config.get("vision_config", config)
    else:
        return None, None
    return config.get("image_size"), config.get("patch_size")


def token_model(recipe: Recipe) -> TokenModel:
    """What the report's token counts need of the recipe: model section and stages."""
    tile, patch = tower_geometry(recipe)
    stages = tuple(StageView(s.name, s.kind, s.longest_edge, tuple(s.sources),
                             getattr(s, "split_turns", False),
                             tuple(q) if (q := getattr(s, "question_types", None)) else None)
                   for s in recipe.stages)
    m = recipe.model
    processor = None
    if m.architecture == "idefics3" and tile and patch:
        from components.model.architectures.idefics3 import build_processor

        def processor(tokenizer, longest_edge: int):
            return build_processor(tokenizer, tile_size=tile, longest_edge=longest_edge,
                                   patch_size=patch, scale_factor=m.scale_factor)
    return TokenModel(m.architecture, tile, patch, m.scale_factor, m.resampler_latents,
                      m.max_length, stages, processor)


def write_data_report(recipe: Recipe, data: DataVersion, out: Path,
                      run: str | None = None) -> DataReport:
    """The report's markdown (``data_report.md``, its PNGs embedded from beside it) and PNGs
    into ``out``."""
    report = build_report(Path(data.workspace) / "data", token_model(recipe))
    suite_images = {name: Path(spec["images"]) for name, spec in contamination_suites(recipe).items()
                    if "images" in spec}
    out.mkdir(parents=True, exist_ok=True)
    write_plots(report, data.shards, out, suite_images)
    sample_grid(data.shards).save(out / "samples.png")
    (out / "data_report.md").write_text(render_markdown(report, data.version, plots="",
                                                        run_link=run))
    return report


def publish_data_report(recipe: Recipe, data: DataVersion, run_id: str) -> Path:
    """The data report (counts, quarantine, image sizes, tokens per stage, modality mix,
    duplicates and contamination, sample grid) as files in the workspace's report/, MLflow
    artifacts of the data run (data_report/: the markdown and its PNGs) and a Prefect markdown
    artifact that links to that run."""
    out = Path(data.workspace) / "report"
    shutil.rmtree(out, ignore_errors=True)
    link = run_link(run_id)
    report = write_data_report(recipe, data, out, link)
    registry.log_artifact(out, "data_report", run_id=run_id)
    summary = render_markdown(report, data.version, grid_name="data_report/samples.png",
                              run_link=link)
    publish_markdown(f"{recipe.name}-data-report",
                     summary + f"\nThe full report with its plots: `data_report/data_report.md` in "
                               f"MLflow run {link}.\n",
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
