"""The `ablate` flow: every arm of a study (configs/ablations/) as a pipeline per seed, under one
MLflow parent run holding the table (mean and 95 % interval per arm), whether the published
claim reproduced, and the plots; a Prefect markdown report with the same. Arms of one seed
share names, so every stage they have in common is trained once and reused.

A seed's arms run in order, in this process or (``workers`` > 1) in a child process per seed,
``workers`` seeds at a time, each child with an equal share of the cores: on this 2-core CPU
two one-thread processes train 1.7x the samples per second of one two-thread process
(`vlmforge bench parallel`).
`python -m flows.ablate SPEC OUT` is what each child runs."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

import registry
from components.ablation import Study, arm_recipe, plot_arms, plot_curves, verdict
from components.recipe import Recipe
from flows.lineage import markdown_table, publish_markdown, run_link
from flows.pipeline import PipelineResult, pipeline
from flows.stages.launch import child_env, run_streaming


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


def backbone_scores(recipe: Recipe, result: PipelineResult) -> dict[str, float]:
    """The recipe's own backbones' metrics, ``vision_`` or ``lm_`` prefixed (a tower's
    zero-shot retrieval, its training seconds)."""
    if recipe.backbones is None:
        return {}
    roles = {recipe.backbones.vision.registered_model: "vision",
             recipe.backbones.text.registered_model: "lm"}
    return {f"{roles[b.name]}_{k}": v for b in result.backbones if b.name in roles
            for k, v in b.metrics.items()}


def seed_arms(study: Study, base: dict[str, Any], seed: int, parent_run_id: str
              ) -> dict[str, dict[str, Any]]:
    """Every arm of ``study`` for one seed, in order (later arms reuse the stages the first
    trained): per arm, its scores and its primary metric against the training step."""
    out = {}
    for arm in study.arms:
        recipe = Recipe.model_validate(arm_recipe(study, base, arm, seed))
        get_run_logger().info("study %s: arm %s, seed %d", study.name, arm, seed)
        result = pipeline(recipe, parent_run_id=parent_run_id)
        out[arm] = {"scores": {**result.scores(), **result.comparison.checks,
                               **backbone_scores(recipe, result)},
                    "curve": _curve(recipe, result, study.primary)}
    return out


def _seed_in_child(study: Study, base: dict[str, Any], seed: int, parent_run_id: str,
                   env: dict[str, str], logger) -> dict[str, dict[str, Any]]:
    """`seed_arms` in a child process (environment ``env``), its output in ``logger``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "seed.json", Path(tmp) / "arms.json"
        spec.write_text(json.dumps({"study": study.model_dump(mode="json"), "base": base,
                                    "seed": seed, "parent_run_id": parent_run_id}))
        run_streaming([sys.executable, "-m", "flows.ablate", str(spec), str(out)],
                      lambda line: logger.info("seed %d | %s", seed, line), env)
        return json.loads(out.read_text())


@flow(name="ablate-seed")
def _seed_flow(study: Study, base: dict[str, Any], seed: int, parent_run_id: str
               ) -> dict[str, dict[str, Any]]:
    return seed_arms(study, base, seed, parent_run_id)


@flow(name="ablate")
def ablate(study: Study, base: dict[str, Any], seeds: list[int] | None = None,
           workers: int = 1) -> dict[str, Any]:
    """Run every arm of ``study`` for each seed (``workers`` seeds at a time, each in a child
    process, when above 1); log and return the table and the verdict."""
    logger = get_run_logger()
    seeds = list(seeds if seeds is not None else study.seeds)
    start = time.perf_counter()
    scores: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in study.arms}
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {arm: {} for arm in study.arms}
    with registry.start_run(f"ablate-{study.name}", tags={"study": study.name}) as run_id:
        registry.log_params({"study": study.model_dump(mode="json"), "seeds": seeds,
                             "workers": workers})
        if workers > 1:
            threads = max(1, (os.cpu_count() or 1) // workers)
            logger.info("study %s: %d seeds at a time, %d thread(s) each", study.name, workers, threads)
            env = child_env({"OMP_NUM_THREADS": str(threads)})  # in the flow: its Prefect server
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(lambda s: _seed_in_child(study, base, s, run_id, env, logger),
                                     seeds))
        else:
            done = [seed_arms(study, base, seed, run_id) for seed in seeds]
        for seed, arms in zip(seeds, done, strict=True):
            for arm, outcome in arms.items():
                scores[arm][seed] = outcome["scores"]
                curves[arm][seed] = [tuple(point) for point in outcome["curve"]]
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


def main(argv: list[str]) -> int:
    """A child of `ablate`: SPEC (study, base, seed, parent run) -> OUT (`seed_arms` as JSON)."""
    from flows.environment import configure_stores

    configure_stores()
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    arms = _seed_flow(Study.model_validate(spec["study"]), spec["base"], spec["seed"],
                      spec["parent_run_id"])
    Path(out_path).write_text(json.dumps(arms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
