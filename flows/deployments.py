"""The flows that deployments run on a schedule (prefect.yaml, infra/prefect/, `vlmforge schedule`).

A scheduler can only pass JSON, so these take a recipe file (resolved against the
working directory, then the project root) or an inline recipe, and set up the stores
as `vlmforge` does before calling the pipeline and evaluate flows. The heavy modules
are imported inside the flows: loading this file to build a deployment stays cheap.
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations when a flow run starts in a fresh process.
from pathlib import Path

from prefect import flow, get_run_logger

from components.recipe import Recipe, load_recipe
from flows.environment import PROJECT_ROOT, configure_stores

DEFAULT_RECIPE = "configs/tiny.yaml"


def resolve_recipe(recipe_path: str, recipe: Recipe | None = None) -> Recipe:
    """``recipe`` when given, else the validated recipe file (relative paths: the working
    directory first, then the project root)."""
    if recipe is not None:
        return recipe
    path = Path(recipe_path).expanduser()
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"recipe {recipe_path!r} not found (nor under {PROJECT_ROOT})")
    return load_recipe(path)


@flow(name="run-recipe")
def run_recipe(recipe_path: str = DEFAULT_RECIPE, recipe: Recipe | None = None,
               force: bool = False) -> str:
    """The whole pipeline for a recipe file (or an inline recipe, which wins); returns the
    summary table that `vlmforge run` prints."""
    chosen = resolve_recipe(recipe_path, recipe)
    configure_stores()
    from flows.pipeline import pipeline

    result = pipeline(chosen, force=force)
    summary = result.summary(chosen.registered_model)
    get_run_logger().info(summary)
    return summary


@flow(name="evaluate-champion")
def evaluate_champion(recipe_path: str = DEFAULT_RECIPE, recipe: Recipe | None = None,
                      model: str = "champion", force: bool = False) -> dict[str, float]:
    """The held-out suite on the recipe's `champion` (or another alias, or a version number)
    over the recipe's current data, then the promotion gate; refreshes the version's model
    card and returns the scores. Unchanged data and settings reuse the version's recorded
    scores; `force` re-scores.
    """
    chosen = resolve_recipe(recipe_path, recipe)
    configure_stores()
    import registry
    from flows.lineage import publish_model_card
    from flows.stages.data import data_flow
    from flows.stages.evaluate import evaluate_flow

    name = chosen.registered_model
    version = model if model.isdigit() else registry.get_alias(name, model)
    if version is None:
        raise LookupError(f"{name!r} has no version with alias {model!r}: run the pipeline first")
    with registry.start_run(f"evaluate-{model}-{chosen.name}",
                            tags={"flow": "evaluate-champion", "recipe": chosen.name,
                                  "model_version": version}) as run_id:
        data = data_flow(chosen, parent_run_id=run_id)
        outcome = evaluate_flow(chosen, version, data, parent_run_id=run_id, force=force)
    publish_model_card(chosen, outcome.version)  # the card shows the latest scores
    get_run_logger().info("%s v%s: %s; champion is v%s", name, version, outcome.reason,
                          outcome.champion)
    return outcome.metrics
