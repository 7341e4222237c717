"""The VLM training stages (pretrain, sft, align): one MLflow run and one registered
version each; the registry is the hand-off between stages.

A stage is skipped when a version with the same cache key exists: the key covers
the stage's recipe section, the model section, the parent version and the data
version. `force=True` retrains.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task

import registry
from components.data.decoded import cached_samples
from components.data.shards import sample_images, shard_paths, split_sources
from components.data.synthetic import SOURCES, TEXT_ONLY_SOURCES
from components.data.version import DataVersion
from components.evaluation.synthetic_suite import evaluate_suite
from components.model.build import build_stage_model, save_vlm
from components.model.chat import ChatEncoder
from components.model.freeze import merge_lora
from components.recipe import STAGE_KINDS, Recipe, StageBase, fingerprint, stage_cache_key
from components.training.checkpoints import CheckpointLock
from components.training.stage import run_stage
from components.training.tower_cache import cached_tower
from flows.environment import vlmforge_home
from flows.lineage import (
    StepLogger,
    dataset_tags,
    git_sha,
    log_data_inputs,
    log_predictions,
    markdown_table,
    publish_markdown,
    publish_model_card,
    run_link,
)
from flows.stages.backbones import BackboneOutcome

QUICK_EVAL_SIZE = 240  # held-out questions scored after every stage
REPORT_METRICS = ("loss_first", "loss_last", "ground_heldout_r2", "heldout_vqa_accuracy", "heldout_ocr_accuracy",
                  "heldout_text_accuracy", "heldout_existence_hallucination_rate")


@dataclass
class StageOutcome:
    stage: str
    kind: str
    version: str
    parent_version: str
    run_id: str
    cached: bool
    seconds: float
    trainable: int
    metrics: dict[str, float] = field(default_factory=dict)


QUICK_EVAL_SOURCES = ("scenes_vqa", "ocr", "text", "scenes_caption")  # first, when present


def quick_eval_samples(data: DataVersion, size: int = QUICK_EVAL_SIZE) -> list:
    """A fixed held-out slice of every test source, interleaved so each task is represented
    (the default corpus's question, OCR, text and caption sources first, then datasets)."""
    present = split_sources(data.shards, "test")
    sources = [s for s in QUICK_EVAL_SOURCES if s in present]
    sources += [s for s in present if s not in QUICK_EVAL_SOURCES and s not in SOURCES]
    per_source = [list(cached_samples(shard_paths(data.shards, "test", [s]))) for s in sources]
    out, i = [], 0
    while len(out) < size and any(i < len(p) for p in per_source):
        out.extend(p[i] for p in per_source if i < len(p))
        i += 1
    return out[:size]


def parent_of(recipe: Recipe, stage: StageBase, data: DataVersion, backbones: list[BackboneOutcome]) -> str:
    """The version a stage starts from: the previous stage's newest version on this data, or
    `backbones:<name>=<v>,...` for the first stage."""
    previous = recipe.previous_stage(stage)
    if previous is None:
        return "backbones:" + ",".join(f"{b.name}={b.version}" for b in backbones)
    version = registry.find_version(recipe.registered_model,
                                    {"stage": previous.name, "data_version": data.version})
    if version is None:
        raise LookupError(f"stage {stage.name!r} needs a version of {previous.name!r} on data "
                          f"{data.version}: run the previous stage first")
    return version


def _cached(recipe: Recipe, stage: StageBase, key: str, parent: str) -> StageOutcome | None:
    version = registry.find_version(recipe.registered_model, {"cache_key": key})
    if version is None:
        return None
    info = registry.version_info(recipe.registered_model, version)
    run = registry.get_run(info["run_id"])
    return StageOutcome(stage.name, stage.kind, version, parent, info["run_id"], True, 0.0,
                        int(run["params"].get("trainable_params", 0)), run["metrics"])


def grounding_metrics(fit) -> dict[str, float]:
    """The connector fit of a `ground_connector` stage, as MLflow metrics."""
    out = {"ground_images": float(fit.images), "ground_tokens": float(fit.tokens), "ground_r2": fit.r2}
    if fit.heldout_r2 is not None:
        out["ground_heldout_r2"] = fit.heldout_r2
    return out


def start_model(recipe: Recipe, stage: StageBase, parent: str, data: DataVersion,
                backbones: list[BackboneOutcome]):
    """The model, processor and trainable counts a stage starts from: the parent version from
    the registry, or (first stage) the VLM assembled from the registered backbones."""
    used = recipe.model.backbone_names()
    registered = {b.name: registry.hf_model_dir(b.name, b.version) for b in backbones if b.name in used}
    first = parent.startswith("backbones:")
    images = None
    if first and recipe.model.standardize_features:
        sources = [s for s in recipe.stages[0].sources if s not in TEXT_ONLY_SOURCES]
        images = sample_images(data.shards, sources, recipe.model.standardize_features)
    return build_stage_model(
        recipe.model, seed=recipe.seed, registered=registered, longest_edge=stage.longest_edge,
        parent_dir=None if first else registry.hf_model_dir(recipe.registered_model, parent),
        unfreeze=stage.unfreeze, lora_rank=stage.lora_rank, feature_images=images, dtype=stage.dtype)


def checkpoint_dir(recipe: Recipe, stage: StageBase, key: str) -> Path:
    """Where a stage's resumable checkpoints live (`train.checkpoint_every` > 0): keyed by the
    stage's cache key, so re-running the same stage after a crash resumes it. The run that
    trains the stage holds `<dir>.lock` (`CheckpointLock`) from before `--force` clears the
    directory until the registered version has replaced it."""
    return vlmforge_home() / "checkpoints" / recipe.name / f"{stage.name}-{key}"


def reference_file(recipe: Recipe, stage: StageBase, parent: str, data: DataVersion) -> Path:
    """Where an align stage with `reference: cached` keeps its reference log-probs: beside its
    checkpoints, named after the reference model (the parent version, in the stage's dtype)
    and the data version, so a rerun with another beta or loss reuses them; kept after the
    stage registers."""
    key = fingerprint(parent, data.version, stage.dtype)
    return vlmforge_home() / "checkpoints" / recipe.name / f"{stage.name}-reference-{key}.json"


@task(name="train-stage")
def train_stage(recipe: Recipe, stage: StageBase, data: DataVersion, backbones: list[BackboneOutcome],
                parent_run_id: str | None, force: bool,
                previous_version: str | None = None) -> StageOutcome:
    """Train (or reuse) one stage. Inside a pipeline `previous_version` is the version its
    previous stage just produced; alone, the registry's newest one is looked up."""
    logger = get_run_logger()
    if previous_version is not None and recipe.previous_stage(stage) is not None:
        parent = previous_version
    else:
        parent = parent_of(recipe, stage, data, backbones)
    key = stage_cache_key(recipe, stage, parent, data.version)
    if not force and (hit := _cached(recipe, stage, key, parent)):
        logger.info("%s: unchanged, reusing version %s", stage.name, hit.version)
        return hit
    # one run of a stage at a time: a second one fails fast (CheckpointInUse names the holder)
    # instead of deleting or overwriting the first one's checkpoints
    with CheckpointLock(checkpoint_dir(recipe, stage, key)):
        if not force and (hit := _cached(recipe, stage, key, parent)):  # registered meanwhile
            logger.info("%s: registered by the run before, reusing version %s", stage.name,
                        hit.version)
            return hit
        return _train_and_register(recipe, stage, data, backbones, parent_run_id, force,
                                   parent, key)


def _train_and_register(recipe: Recipe, stage: StageBase, data: DataVersion,
                        backbones: list[BackboneOutcome], parent_run_id: str | None, force: bool,
                        parent: str, key: str) -> StageOutcome:
    """Train the stage, register its version, drop its checkpoints (the caller holds the
    stage's checkpoint lock)."""
    logger = get_run_logger()
    if force:  # retrain from scratch, not from an earlier run's checkpoints
        shutil.rmtree(checkpoint_dir(recipe, stage, key), ignore_errors=True)
    start = time.perf_counter()
    model, processor, counts = start_model(recipe, stage, parent, data, backbones)
    with registry.start_run(stage.name, parent_run_id=parent_run_id,
                            tags={"stage": stage.name, "kind": stage.kind}) as run_id:
        log_data_inputs(data, run_id)
        registry.log_params({"stage": stage.model_dump(mode="json"), "parent_version": parent,
                             "trainable_params": sum(counts.values()),
                             "total_params": sum(p.numel() for p in model.parameters()),
                             **{f"trainable_{g}": n for g, n in counts.items()}})
        run = run_stage(model, processor, stage, data.shards, seed=recipe.seed,
                        max_length=recipe.model.max_length,
                        on_log=StepLogger(stage.train.steps, f"{recipe.name}-{stage.name}"),
                        checkpoint_dir=checkpoint_dir(recipe, stage, key),
                        reference_file=reference_file(recipe, stage, parent, data))
        if run.result.resumed_from:
            registry.log_params({"resumed_from_step": run.result.resumed_from})
        seconds = time.perf_counter() - start
        samples = quick_eval_samples(data)
        with cached_tower(model):  # the val images, seen by every stage's probe
            suite = evaluate_suite(model, ChatEncoder(processor, recipe.model.max_length), samples,
                                   max_new_tokens=recipe.evaluate.max_new_tokens,
                                   batch_size=recipe.evaluate.batch_size)
        metrics = {**({"loss_first": run.result.mean_loss(first=True),
                       "loss_last": run.result.mean_loss(first=False)} if run.result.history else {}),
                   **(grounding_metrics(run.grounding) if run.grounding else {}),
                   "dropped_too_long": float(run.dropped), "train_seconds": seconds,
                   **{f"drawn_{s}": float(n) for s, n in run.source_counts.items()},
                   **{k: float(n) for k, n in run.corrections.items()},
                   **(run.preflight.metrics() if run.preflight else {}),
                   **(run.tower_cache.metrics() if run.tower_cache else {}),
                   **(run.encode_memo.metrics() if run.encode_memo else {}),
                   **{f"heldout_{k}": v for k, v in suite.metrics.items()}}
        registry.log_metrics(metrics)
        log_predictions(suite.rows, [s.images[0] if s.images else None for s in samples],
                        "heldout", recipe.evaluate.samples_to_log)
        with tempfile.TemporaryDirectory() as tmp:
            merge_lora(model)  # LoRA adapters fold into the weights: a stock model is registered
            save_vlm(model, processor, Path(tmp))
            version = registry.register_hf_model(
                Path(tmp), recipe.registered_model, run_id=run_id,
                tags={"stage": stage.name, "kind": stage.kind, "data_version": data.version,
                      "git_sha": git_sha(), "parent_version": parent, "cache_key": key,
                      "recipe": recipe.name, **dataset_tags(data)},
                description=f"{recipe.name} after stage {stage.name}")
        publish_model_card(recipe, version)
    shutil.rmtree(checkpoint_dir(recipe, stage, key), ignore_errors=True)  # registered: not needed
    logger.info("%s: registered %s v%s in %.0fs", stage.name, recipe.registered_model, version, seconds)
    return StageOutcome(stage.name, stage.kind, version, parent, run_id, False, seconds,
                        sum(counts.values()), metrics)


def stage_report(recipe: Recipe, kind: str, data: DataVersion, outcomes: list[StageOutcome]) -> str:
    """The Prefect markdown report of a stage flow: a row per stage with its MLflow run."""
    rows = [[o.stage, f"{recipe.registered_model} v{o.version}", o.parent_version, run_link(o.run_id),
             f"{o.trainable:,}", "cached" if o.cached else f"{o.seconds:.0f}",
             " ".join(f"{k.removeprefix('heldout_')}={o.metrics[k]:.2f}" for k in REPORT_METRICS
                      if k in o.metrics)] for o in outcomes]
    return (f"# {kind}: {recipe.name} on data `{data.version}`\n\n"
            + markdown_table(["stage", "version", "parent", "MLflow run", "trainable", "wall s",
                              "metrics"], rows) + "\n")


def _stage_flow(kind: str):
    @flow(name=kind)
    def stage_flow(recipe: Recipe, data: DataVersion, backbones: list[BackboneOutcome],
                   parent_run_id: str | None = None, force: bool = False,
                   previous_version: str | None = None) -> list[StageOutcome]:
        outcomes: list[StageOutcome] = []
        for stage in recipe.stages_of(kind):
            outcomes.append(train_stage(recipe, stage, data, backbones, parent_run_id, force,
                                        previous_version))
            previous_version = outcomes[-1].version
        if outcomes:
            publish_markdown(f"{recipe.name}-{kind}", stage_report(recipe, kind, data, outcomes),
                             f"{kind} stages of {recipe.name}")
        return outcomes

    stage_flow.__doc__ = f"Run every `{kind}` stage of the recipe in order."
    return stage_flow


STAGE_FLOWS = {kind: _stage_flow(kind) for kind in STAGE_KINDS}  # one Prefect flow per stage kind
