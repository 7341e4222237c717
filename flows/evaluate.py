"""The evaluate stage: the held-out synthetic suite on a registered version, then the
promotion gate that moves `champion` only when the candidate is better."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import flow, get_run_logger, task

import registry
from components.data.shards import read_samples
from components.evaluation.synthetic_suite import evaluate_suite
from components.recipe import Recipe, fingerprint
from components.training.batching import ChatEncoder
from flows.data import DataVersion
from flows.lineage import log_data_inputs, log_predictions
from flows.models import load_version


@dataclass
class EvalOutcome:
    version: str
    run_id: str | None
    cached: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    promoted: bool = False
    champion: str | None = None
    reason: str = ""


@task(name="evaluate-suite")
def evaluate_version(recipe: Recipe, version: str, data: DataVersion, parent_run_id: str | None,
                     force: bool) -> EvalOutcome:
    name = recipe.registered_model
    key = fingerprint(recipe.evaluate, data.version)
    info = registry.version_info(name, version)
    if not force and info["tags"].get("eval_key") == key:
        return EvalOutcome(version, info["tags"].get("eval_run_id"), True, 0.0,
                           registry.read_metrics(name, version))
    start = time.perf_counter()
    model, processor = load_version(name, version)  # the processor of its last training stage
    samples = list(read_samples(sorted((data.shards / "test").glob("*.tar"))))
    with registry.start_run("evaluate", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate", "model_version": version}) as run_id:
        log_data_inputs(data, run_id)
        registry.log_params({"evaluate": recipe.evaluate.model_dump(mode="json"),
                             "model": f"models:/{name}/{version}", "questions": len(samples)})
        suite = evaluate_suite(model, ChatEncoder(processor, recipe.model.max_length), samples,
                               max_new_tokens=recipe.evaluate.max_new_tokens,
                               batch_size=recipe.evaluate.batch_size)
        registry.log_metrics(suite.metrics)
        log_predictions(suite.rows, [s.images[0] if s.images else None for s in samples],
                        "test", recipe.evaluate.samples_to_log)
    registry.record_metrics(name, version, suite.metrics)
    registry.set_version_tags(name, version, {"eval_key": key, "eval_run_id": run_id})
    return EvalOutcome(version, run_id, False, time.perf_counter() - start, suite.metrics)


@flow(name="evaluate")
def evaluate_flow(recipe: Recipe, version: str, data: DataVersion, parent_run_id: str | None = None,
                  force: bool = False) -> EvalOutcome:
    """Score `version` on the held-out suite and gate it against the champion."""
    logger = get_run_logger()
    outcome = evaluate_version(recipe, version, data, parent_run_id, force)
    gate = registry.GateConfig(primary=recipe.evaluate.primary_metric,
                               min_delta=recipe.evaluate.min_delta, guarded=recipe.evaluate.guarded)
    decision = registry.promote(recipe.registered_model, version, None, gate)
    outcome.promoted, outcome.reason = decision.promote, decision.reason
    outcome.champion = registry.get_alias(recipe.registered_model, "champion")
    logger.info("v%s: %s (champion: v%s)", version, decision.reason, outcome.champion)
    return outcome
