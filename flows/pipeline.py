"""The `pipeline` flow: data -> backbones -> pretrain -> sft -> align -> evaluate,
one sub-flow per stage, one MLflow parent run with a child run per stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import flow

import registry
from components.data import decoded
from components.data.version import DataVersion
from components.model import image_memo
from components.recipe import STAGE_KINDS, Recipe
from components.training.tower_cache import clear_shared
from flows.lineage import git_sha, markdown_table, publish_markdown, publish_model_card, run_link
from flows.stages.backbones import BackboneOutcome, backbones_flow
from flows.stages.compare import COLUMNS, StageComparison, compare_stages
from flows.stages.data import data_flow, workspace_for
from flows.stages.evaluate import EvalOutcome, evaluate_flow
from flows.stages.launch import StageLauncher
from flows.stages.training import STAGE_FLOWS, StageOutcome
from flows.stopping import note_phase
from flows.summary import KEY_METRICS, SHORT, Row, render


@dataclass
class PipelineResult:
    data: DataVersion
    backbones: list[BackboneOutcome]
    stages: list[StageOutcome]
    evaluation: EvalOutcome
    comparison: StageComparison
    run_id: str
    seconds: float

    def rows(self, model_name: str) -> list[Row]:
        rows = [Row(f"backbone {b.name}", b.run_id, f"{b.name} v{b.version}", b.trainable, b.seconds,
                    b.cached, b.metrics) for b in self.backbones]
        rows += [Row(s.stage, s.run_id, f"{model_name} v{s.version}", s.trainable, s.seconds,
                     s.cached, s.metrics) for s in self.stages]
        ev = self.evaluation
        rows.append(Row("evaluate", ev.run_id, f"{model_name} v{ev.version}", 0, ev.seconds,
                        ev.cached, {}))
        return rows

    def scores(self) -> dict[str, float]:
        """The evaluated version's scores: the held-out suite's and the recipe suites' (prefixed)."""
        ev = self.evaluation
        return {**ev.metrics, **{k: v for b in ev.benchmarks.values() for k, v in b.metrics.items()}}

    def summary(self, model_name: str) -> str:
        ev = self.evaluation
        return render(self.rows(model_name), self.scores(), ev.champion, model_name, ev.reason,
                      self.data.version, self.seconds, self.comparison.render())

    def markdown(self, model_name: str) -> str:
        """The summary as markdown, with links to the MLflow runs (a Prefect artifact)."""
        ev = self.evaluation
        stages = [[r.stage, run_link(r.run_id), r.version, f"{r.trainable:,}",
                   "cached" if r.cached else f"{r.seconds:.0f}",
                   " ".join(f"{SHORT[k]}={r.metrics[k]:.2f}" for k in KEY_METRICS if k in r.metrics)]
                  for r in self.rows(model_name)]
        scores = [[k, f"{v:.3f}"] for k, v in sorted(self.scores().items())]
        return "\n\n".join([
            f"# pipeline: {model_name}, data version `{self.data.version}`, "
            f"{self.seconds:.0f}s wall",
            f"MLflow pipeline run {run_link(self.run_id)}",
            markdown_table(["stage", "MLflow run", "version", "trainable", "wall s", "metrics"],
                           stages),
            "## Benchmark scores (held-out test split)",
            markdown_table(["metric", "score"], scores) if scores else "_none_",
            "## Every stage on the held-out test split",
            markdown_table(["stage", "version", *COLUMNS.values()], self.comparison.table()),
            f"**registry:** `models:/{model_name}@champion` -> version {ev.champion} "
            f"({ev.reason})",
        ]) + "\n"


def check_reachable(recipe: Recipe) -> None:
    """The recipe's pre-flight for the whole pipeline (components/recipe_checks.py): raises
    `PreflightError` naming every backbone, dataset, suite file or disk shortfall that would
    make a stage fail, before any stage does work. `vlmforge run` runs it before the flow too,
    so that it fails in seconds, before Prefect's server starts."""
    from components.recipe_checks import preflight

    preflight(recipe, registered=lambda name: registry.find_version(name, {}) is not None,
              workspace=workspace_for(recipe))


@flow(name="pipeline")
def pipeline(recipe: Recipe, force: bool = False, parent_run_id: str | None = None,
             launcher: StageLauncher | None = None) -> PipelineResult:
    """Every stage of the recipe, each reusing its previous result when nothing changed
    (``parent_run_id``: the MLflow run this pipeline's run nests under, e.g. an ablation's;
    ``launcher``: run the training stages on several processes, the others stay inline).
    The frozen tower's outputs, the decoded shards and the processed images, shared by its
    stages and evaluations, are dropped at the end (a scheduler's process runs many pipelines)."""
    try:
        return _pipeline(recipe, force, parent_run_id, launcher)
    finally:
        clear_shared()
        decoded.clear()
        image_memo.clear()


def _pipeline(recipe: Recipe, force: bool, parent_run_id: str | None,
              launcher: StageLauncher | None) -> PipelineResult:
    start = time.perf_counter()
    check_reachable(recipe)
    with registry.start_run(f"pipeline-{recipe.name}", parent_run_id=parent_run_id,
                            tags={"recipe": recipe.name, "git_sha": git_sha()}) as run_id:
        registry.log_params({"recipe": recipe.model_dump(mode="json")})
        note_phase("data")
        data = data_flow(recipe, parent_run_id=run_id)
        note_phase("backbones")
        backbones = backbones_flow(recipe, data, parent_run_id=run_id, force=force)
        stages: list[StageOutcome] = []
        for kind in STAGE_KINDS:
            note_phase(kind)
            previous = stages[-1].version if stages else None
            if launcher is None:
                stages += STAGE_FLOWS[kind](recipe, data, backbones, parent_run_id=run_id,
                                            force=force, previous_version=previous)
            else:
                stages += launcher.run(kind, parent_run_id=run_id, force=force,
                                       previous_version=previous)
        note_phase("evaluate")
        evaluation = evaluate_flow(recipe, stages[-1].version, data, parent_run_id=run_id, force=force)
        comparison = compare_stages(recipe, {s.stage: s.version for s in stages}, data, run_id, force,
                                    scored={evaluation.version: evaluation.metrics})
        registry.log_metrics({f"final_{k}": v for k, v in evaluation.metrics.items()})
        registry.log_metrics(comparison.checks)
        registry.set_tags({"final_version": stages[-1].version, "champion": evaluation.champion})
    if not evaluation.cached:  # the evaluated version's card gains its scores
        publish_model_card(recipe, evaluation.version)
    result = PipelineResult(data, backbones, stages, evaluation, comparison, run_id,
                            time.perf_counter() - start)
    publish_markdown(f"pipeline-{recipe.name}", result.markdown(recipe.registered_model),
                     f"pipeline summary of {recipe.name}")
    return result
