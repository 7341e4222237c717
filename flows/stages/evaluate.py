"""The evaluate stage: benchmark suites on a registered version, then the promotion gate that
moves `champion` only when the candidate is better.

Suites (`vlmforge evaluate --suite NAME`, repeatable):

* ``synthetic`` (the default; what the pipeline runs): the held-out synthetic suite, its
  metrics recorded unprefixed (``vqa_accuracy``, ...) and compared by the promotion gate;
* ``pope``: POPE-style object hallucination, random / popular / adversarial negatives;
* suites of a suite config (YAML, ``--suite-config``): ``synthetic`` with ``shots`` (k-shot
  prompts from a support split), ``pope`` with other settings, and official ``vqa`` /
  ``caption`` / ``mcq`` files. Official results are written in the official result format
  and scored by the very function `vlmforge score` runs, so both give the same numbers.

Every suite but the default records its metrics on the version prefixed with its name
(``pope_adversarial_f1``), where a gate may guard them. Per suite: one MLflow run (metrics,
a predictions table, official results), a Prefect markdown artifact, and a cache key on the
version so an unchanged suite is not rerun. A judged suite's run also holds its frozen judge
record (``<suite>/judge/``: predictions, judge, every judgment, tokens, cost;
flows/stages/judge_records.py), which `vlmforge evaluate --rejudge RUN_ID` replays.

Per suite the stage also records each item's key and score (``<suite>/items.json`` on the
suite's run, named by the version's ``eval_items[.suite]`` tag), so the gate can pair the
candidate's items with the champion's, and a bootstrap interval of every score it can
recompute from them (``<metric>_ci_low``/``_ci_high`` on the run, ``eval_intervals[.suite]``
on the version; how each score is resampled: components/evaluation/intervals.py). Before
gating, the champion is scored on the candidate's data and settings when it was not yet (its
recorded scores are replaced): the gate compares like with like.
"""


from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task

import registry
from components.data.decoded import cached_samples
from components.data.shards import split_shards
from components.data.version import DataVersion
from components.evaluation.answer_nll import text_answer_nll
from components.evaluation.intervals import (
    Interval,
    ItemTable,
    benchmark_table,
    synthetic_table,
    unique_keys,
)
from components.evaluation.runners import run_benchmark
from components.evaluation.suites import (
    DEFAULT_SUITE,
    SuiteSpec,
    metric_prefix,
    parse_suites,
    resolve_suites,
)
from components.evaluation.synthetic_suite import evaluate_suite
from components.model.build import load_vlm
from components.model.chat import ChatEncoder
from components.recipe import Recipe, evaluation_cache_key, evaluation_view, fingerprint
from components.training.tower_cache import cached_tower
from flows.environment import vlmforge_home
from flows.lineage import (
    log_data_inputs,
    log_predictions,
    markdown_table,
    publish_markdown,
    run_link,
)
from flows.stages.judge_records import log_judge_record
from registry.promotion import (
    EVAL_ITEMS,
    comparison_table,
    gate_from_recipe,
    read_intervals,
    record_items,
    suite_tag,
)

ROWS_IN_SUMMARY = 10
Intervals = dict[str, tuple[float, float]]  # metric -> (low, high)


@dataclass
class BenchmarkOutcome:
    suite: str
    run_id: str | None
    cached: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)  # prefixed, as on the version
    intervals: Intervals = field(default_factory=dict)
    note: str = ""  # e.g. the judge stopped at its budget


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
    benchmarks: dict[str, BenchmarkOutcome] = field(default_factory=dict)
    intervals: Intervals = field(default_factory=dict)  # of the default suite's metrics
    gate_table: str = ""  # the gate's comparison (metric, champion, candidate, delta, CI)


def _file_digests(spec: SuiteSpec) -> dict[str, str]:
    out = {}
    for name in ("annotations", "questions", "items", "support_annotations", "support_questions"):
        path = getattr(spec, name)
        if path is not None and Path(path).is_file():
            out[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def summary_markdown(title: str, run_id: str | None, metrics: Mapping[str, float],
                     rows: Sequence[dict], note: str = "",
                     intervals: Mapping[str, Interval] | None = None) -> str:
    """A benchmark's Prefect report: its metrics with their intervals, its first predictions."""
    intervals = intervals or {}
    parts = [f"# {title}", f"MLflow run {run_link(run_id)}" + (f"; {note}" if note else "")]
    parts.append(markdown_table(
        ["metric", "value", "95% interval"],
        [[k, f"{v:.4f}", f"[{intervals[k].low:.4f}, {intervals[k].high:.4f}]"
          if k in intervals else "-"] for k, v in sorted(metrics.items())]))
    if rows:
        shown = rows[:ROWS_IN_SUMMARY]
        parts.append(f"## First {len(shown)} of {len(rows)} predictions")
        parts.append(markdown_table(
            ["key", "question", "prediction", "references", "score"],
            [[r.get("key", ""), r.get("question", ""), r.get("prediction", ""),
              " / ".join(map(str, r.get("answers", [])))[:80],
              "-" if r.get("score") is None else f"{r['score']:.2f}"] for r in shown]))
    return "\n\n".join(parts) + "\n"


def _log_rows(rows: list[dict], suite: str) -> None:
    import pandas as pd

    table = pd.DataFrame([{**r, "answers": " | ".join(map(str, r.get("answers", [])))}
                          for r in rows])
    registry.log_table(table, f"{suite}/predictions.json")


def _record_items(recipe: Recipe, name: str, version: str, table: ItemTable,
                  run_id: str) -> dict[str, Interval]:
    """Log the suite's per-item scores and the intervals of its scores: ``<metric>_ci_low`` /
    ``_ci_high`` on the run (metrics of the default suite's run; tags of a named suite's run,
    whose metrics are exactly its scores) and ``eval_intervals[.suite]`` on the version."""
    ev = recipe.evaluate
    intervals = table.intervals(confidence=ev.confidence, resamples=ev.resamples,
                                seed=ev.interval_seed)
    bounds = {f"{m}_ci_{side}": getattr(i, side) for m, i in intervals.items()
              for side in ("low", "high")}
    if table.suite == DEFAULT_SUITE:
        registry.log_metrics(bounds)
    else:
        registry.set_tags({k: f"{v:.6g}" for k, v in bounds.items()})
    record_items(name, version, table, run_id=run_id, intervals=intervals)
    return intervals


def _fallback_table(suite: str, rows: Sequence[dict], data: DataVersion | None) -> ItemTable:
    """Keys and scores only, for rows no formula reads (their scores get no interval)."""
    return ItemTable(suite, unique_keys([str(r.get("key", i)) for i, r in enumerate(rows)]),
                     [r.get("score") if isinstance(r.get("score"), int | float) else None
                      for r in rows], {}, {}, data.version if data is not None else None)


def _as_pairs(intervals: Mapping[str, Interval]) -> Intervals:
    return {m: (i.low, i.high) for m, i in intervals.items()}


def recipe_suites(recipe: Recipe) -> dict[str, SuiteSpec]:
    """Suites declared in the recipe's ``evaluate.suites``; relative paths are relative to the
    working directory."""
    raw = recipe.evaluate.suites
    return parse_suites(raw, f"recipe {recipe.name!r} evaluate.suites", Path.cwd()) if raw else {}


@task(name="evaluate-suite")
def _frozen(model):
    """An evaluated model never trains: frozen, its vision tower computes each image once
    across every version that holds the same tower (components/training/tower_cache.py)."""
    model.requires_grad_(False)
    return cached_tower(model)


def evaluate_version(recipe: Recipe, version: str, data: DataVersion, parent_run_id: str | None,
                     force: bool, model_name: str | None = None) -> EvalOutcome:
    """The default held-out synthetic suite, metrics recorded unprefixed."""
    name = model_name or recipe.registered_model
    key = evaluation_cache_key(recipe, data.version)
    info = registry.version_info(name, version)
    tags = info["tags"]
    if not force and tags.get("eval_key") == key and tags.get(EVAL_ITEMS):
        return EvalOutcome(version, tags.get("eval_run_id"), True, 0.0,
                           _default_metrics(registry.read_metrics(name, version), tags),
                           intervals=read_intervals(name, version, DEFAULT_SUITE, tags))
    start = time.perf_counter()
    # the processor of its last training stage
    model, processor = load_vlm(registry.hf_model_dir(name, version))
    samples = list(cached_samples(split_shards(data.shards, "test")))
    with registry.start_run("evaluate", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate", "model_version": version,
                                  "suite": DEFAULT_SUITE}) as run_id:
        log_data_inputs(data, run_id)
        registry.log_params({"evaluate": recipe.evaluate.model_dump(mode="json"),
                             "model": f"models:/{name}/{version}", "questions": len(samples)})
        encoder = ChatEncoder(processor, recipe.model.max_length)
        with _frozen(model):
            suite = evaluate_suite(model, encoder, samples,
                                   max_new_tokens=recipe.evaluate.max_new_tokens,
                                   batch_size=recipe.evaluate.batch_size)
            suite.metrics.update(text_answer_nll(model, encoder, samples,
                                                 batch_size=recipe.evaluate.batch_size))
        registry.log_metrics(suite.metrics)
        log_predictions(suite.rows, [s.images[0] if s.images else None for s in samples],
                        "test", recipe.evaluate.samples_to_log)
        registry.record_metrics(name, version, suite.metrics)
        table = synthetic_table(DEFAULT_SUITE, [s.record for s in samples], suite.rows,
                                suite.metrics, data_version=data.version)
        intervals = _record_items(recipe, name, version, table, run_id)
    registry.set_version_tags(name, version, {"eval_key": key, "eval_run_id": run_id})
    publish_markdown(f"evaluate-{name}-{DEFAULT_SUITE}",
                     summary_markdown(f"{name} v{version}: {DEFAULT_SUITE} suite "
                                      f"(data {data.version})", run_id, suite.metrics, suite.rows,
                                      intervals=intervals),
                     f"{DEFAULT_SUITE} suite of {name} v{version}")
    return EvalOutcome(version, run_id, False, time.perf_counter() - start, suite.metrics,
                       intervals=_as_pairs(intervals))


def _default_metrics(recorded: Mapping[str, float], tags: Mapping[str, str]) -> dict[str, float]:
    """The default suite's metrics among a version's recorded ones: all but those of the other
    suites scored on it (their names start with the suite's prefix)."""
    prefixes = tuple(metric_prefix(k.removeprefix("eval_key.")) for k in tags
                     if k.startswith("eval_key."))
    return {k: v for k, v in recorded.items() if not prefixes or not k.startswith(prefixes)}


@task(name="evaluate-benchmark")
def evaluate_benchmark(recipe: Recipe, suite: str, spec: SuiteSpec, model_name: str,
                       version: str, data: DataVersion | None, parent_run_id: str | None,
                       force: bool) -> BenchmarkOutcome:
    """One non-default suite: run, log to MLflow, record prefixed metrics, publish a report."""
    prefix = metric_prefix(suite)
    key = fingerprint(suite, spec, _file_digests(spec), evaluation_view(recipe.evaluate),
                      data.version if data is not None else None)
    info = registry.version_info(model_name, version)
    tags = info["tags"]
    if not force and tags.get(f"eval_key.{suite}") == key and tags.get(suite_tag(EVAL_ITEMS, suite)):
        recorded = registry.read_metrics(model_name, version)
        return BenchmarkOutcome(suite, tags.get(f"eval_run_id.{suite}"), True, 0.0,
                                {k: v for k, v in recorded.items() if k.startswith(prefix)},
                                read_intervals(model_name, version, suite, tags))
    start = time.perf_counter()
    model, processor = load_vlm(registry.hf_model_dir(model_name, version))
    encoder = ChatEncoder(processor, recipe.model.max_length)
    with registry.start_run(f"evaluate-{suite}", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate", "model_version": version,
                                  "suite": suite}) as run_id:
        if data is not None and spec.needs_data:
            log_data_inputs(data, run_id)
        registry.log_params({"suite": {"name": suite, **spec.model_dump(mode="json")},
                             "model": f"models:/{model_name}/{version}"})
        with _frozen(model):
            result = run_benchmark(spec, model, encoder, data,
                                   max_new_tokens=recipe.evaluate.max_new_tokens,
                                   batch_size=recipe.evaluate.batch_size,
                                   judge_cache=vlmforge_home() / "judge-cache")
        metrics = {f"{prefix}{k}": v for k, v in result.metrics.items()}
        registry.log_metrics(metrics)
        registry.log_params({"questions": len(result.rows)})
        if result.rows:
            _log_rows(result.rows, suite)
        if result.results is not None:
            registry.log_dict(result.results, f"{suite}/results.json")
        judge_stop = (log_judge_record(result.judge_record, suite)
                      if result.judge_record is not None else None)
        registry.record_metrics(model_name, version, metrics)
        table = benchmark_item_table(suite, spec, result.rows, metrics, data)
        intervals = _record_items(recipe, model_name, version, table, run_id)
    registry.set_version_tags(model_name, version, {f"eval_key.{suite}": key,
                                                    f"eval_run_id.{suite}": run_id})
    note = ("official results in the run's `" + f"{suite}/results.json`; "
            "`vlmforge score` gives the same numbers") if result.results is not None else ""
    if judge_stop:
        get_run_logger().warning("v%s %s: %s", version, suite, judge_stop)
        note = "; ".join(filter(None, (note, judge_stop)))
    publish_markdown(f"evaluate-{model_name}-{suite}",
                     summary_markdown(f"{model_name} v{version}: {suite} ({spec.kind})", run_id,
                                      metrics, result.rows, note, intervals),
                     f"{suite} suite of {model_name} v{version}")
    return BenchmarkOutcome(suite, run_id, False, time.perf_counter() - start, metrics,
                            _as_pairs(intervals), judge_stop or "")


def benchmark_item_table(suite: str, spec: SuiteSpec, rows: Sequence[dict],
                         metrics: Mapping[str, float], data: DataVersion | None) -> ItemTable:
    """The suite's per-item table: a synthetic suite's rows joined with its records (read
    again from the data split), other kinds from their rows; rows of an unexpected shape give
    keys and scores only."""
    prefix, version = metric_prefix(suite), data.version if data is not None else None
    try:
        if spec.kind == "synthetic" and data is not None:
            samples = list(cached_samples(split_shards(data.shards, spec.split)))
            if [str(r.get("key")) for r in rows] == [s.key for s in samples]:
                return synthetic_table(suite, [s.record for s in samples], rows, metrics,
                                       prefix=prefix, data_version=version)
        elif spec.kind != "synthetic":
            return benchmark_table(suite, spec.kind, rows, metrics, prefix=prefix,
                                   data_version=version)
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    return _fallback_table(suite, rows, data)


@flow(name="evaluate")
def evaluate_flow(recipe: Recipe, version: str, data: DataVersion | None,
                  parent_run_id: str | None = None, force: bool = False,
                  suites: list[str] | None = None,
                  suite_specs: dict[str, SuiteSpec] | None = None,
                  model_name: str | None = None) -> EvalOutcome:
    """Score `version` on ``suites`` (default: the held-out synthetic suite and every suite the
    recipe's ``evaluate.suites`` declares); when the default suite is among them, gate the
    version against the champion (its primary metric may be any suite's score)."""
    logger = get_run_logger()
    name = model_name or recipe.registered_model
    declared = recipe_suites(recipe)
    specs = resolve_suites(suites or [DEFAULT_SUITE, *declared], {**declared, **(suite_specs or {})})
    outcome: EvalOutcome | None = None
    if DEFAULT_SUITE in specs:
        if data is None:
            raise ValueError(f"the {DEFAULT_SUITE} suite needs the recipe's data")
        outcome = evaluate_version(recipe, version, data, parent_run_id, force, model_name=name)
    benchmarks = {s: evaluate_benchmark(recipe, s, spec, name, version, data, parent_run_id, force)
                  for s, spec in specs.items() if s != DEFAULT_SUITE}
    champion = registry.get_alias(name, "champion")
    if outcome is not None and champion not in (None, version):
        # the gate compares like with like: the champion on this data, these suites, settings
        evaluate_version(recipe, champion, data, parent_run_id, False, model_name=name)
        for s, spec in specs.items():
            if s != DEFAULT_SUITE:
                evaluate_benchmark(recipe, s, spec, name, champion, data, parent_run_id, False)
    for b in benchmarks.values():
        logger.info("v%s %s: %s%s", version, b.suite,
                    ", ".join(f"{k}={v:.4g}" for k, v in sorted(b.metrics.items())),
                    " (recorded)" if b.cached else "")
    if outcome is None:
        merged = {k: v for b in benchmarks.values() for k, v in b.metrics.items()}
        outcome = EvalOutcome(version, None, all(b.cached for b in benchmarks.values()),
                              sum(b.seconds for b in benchmarks.values()), merged)
        outcome.reason = f"promotion gate not run: it compares the {DEFAULT_SUITE!r} suite"
    else:
        gate = gate_from_recipe(recipe.evaluate)
        decision = registry.promote(name, version, None, gate)
        outcome.promoted, outcome.reason = decision.promote, decision.reason
        if decision.rows:
            outcome.gate_table = comparison_table(decision, version, gate.confidence)
            logger.info("v%s against champion v%s; gate: %s\n%s", version, decision.previous,
                        gate.describe(), outcome.gate_table)
    outcome.champion = registry.get_alias(name, "champion")
    outcome.benchmarks = benchmarks
    logger.info("v%s: %s (champion: v%s)", version, outcome.reason, outcome.champion)
    return outcome

