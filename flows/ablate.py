"""The `ablate` flow: every arm of a study (configs/ablations/) as a pipeline per seed, under one
MLflow parent run holding the table (mean and 95 % interval per arm), whether the published
claim reproduced, and the plots; a Prefect markdown report with the same. Arms of one seed
share names, so every stage they have in common is trained once and reused."""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

import registry
from components.ablation import Study, arm_recipe, plot_arms, plot_curves, verdict
from components.recipe import Recipe
from flows.lineage import markdown_table, publish_markdown, run_link
from flows.pipeline import PipelineResult, pipeline


def _curve(recipe: Recipe, result: PipelineResult, metric: str) -> list[tuple[int, float]]:
    """``metric`` of each stage's version against the training steps taken up to it."""
    steps, out = 0, []
    for stage in recipe.stages:
        steps += stage.train.steps
        value = result.comparison.metrics.get(stage.name, {}).get(metric)
        if value is not None:
            out.append((steps, value))
    return out


def _mean_curve(per_seed: dict[int, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = {}
    for points in per_seed.values():
        for step, value in points:
            by_step.setdefault(step, []).append(value)
    return [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]


def markdown(result: dict[str, Any], run_id: str, plots: dict[str, bytes]) -> str:
    metrics = [result["primary"], *[m for m in next(iter(result["table"].values()), {})
                                   if m != result["primary"]]]
    rows = [[arm, *(f"{t[m]['mean']:.3f} [{t[m]['ci_low']:.3f}, {t[m]['ci_high']:.3f}]"
                    if m in t else "-" for m in metrics)] for arm, t in result["table"].items()]
    diff = result["difference"]
    images = [f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
              for name, png in plots.items()]
    return "\n\n".join([
        f"# Ablation `{result['study']}`: reproduced = **{str(result['reproduced']).lower()}**",
        f"Claim ({result['source']}): {result['claim']}",
        f"MLflow run {run_link(run_id)}",
        markdown_table(["arm", *metrics], rows),
        (f"{result['treatment']} - {result['baseline']} on {result['primary']}: "
         f"{diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] (expected "
         f"{result['direction']}, {diff['n']} seeds)") if diff else "no paired difference",
        *images]) + "\n"


@flow(name="ablate")
def ablate(study: Study, base: dict[str, Any], seeds: list[int] | None = None) -> dict[str, Any]:
    """Run every arm of ``study`` for each seed; log and return the table and the verdict."""
    logger = get_run_logger()
    seeds = list(seeds if seeds is not None else study.seeds)
    start = time.perf_counter()
    scores: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in study.arms}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {arm: {} for arm in study.arms}
    with registry.start_run(f"ablate-{study.name}", tags={"study": study.name}) as run_id:
        registry.log_params({"study": study.model_dump(mode="json"), "seeds": seeds})
        for seed in seeds:
            for arm in study.arms:
                recipe = Recipe.model_validate(arm_recipe(study, base, arm, seed))
                logger.info("study %s: arm %s, seed %d", study.name, arm, seed)
                result = pipeline(recipe, parent_run_id=run_id)
                scores[arm][seed] = {**result.scores(), **result.comparison.checks}
                curves[arm][seed] = _curve(recipe, result, study.primary)
        result = verdict(study, scores)
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["scores"] = {arm: {str(s): m for s, m in by_seed.items()} for arm, by_seed in scores.items()}
        for arm, metrics in result["table"].items():
            registry.log_metrics({f"{arm}.{m}.{k}": v[k] for m, v in metrics.items()
                                  for k in ("mean", "ci_low", "ci_high") if abs(v[k]) != float("inf")})
        registry.log_metrics({"reproduced": float(result["reproduced"])})
        registry.log_dict(result, "ablation.json")
        plots = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in (("arms", plot_arms(result, Path(tmp) / "arms.png")),
                               ("curves", plot_curves({a: _mean_curve(c) for a, c in curves.items()},
                                                      study.primary, Path(tmp) / "curves.png"))):
                registry.log_artifact(path, "plots")
                plots[name] = path.read_bytes()
        publish_markdown(f"ablate-{study.name}", markdown(result, run_id, plots),
                         f"ablation study {study.name}")
    result["run_id"] = run_id
    logger.info("study %s: reproduced=%s in %.0fs", study.name, result["reproduced"], result["seconds"])
    return result
