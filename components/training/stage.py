"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.decoded import cached_samples
from components.data.shards import shard_paths
from components.model.chat import ChatEncoder
from components.recipe import STAGE_KINDS, AlignStage, StageBase, SupervisedStage
from components.training.activations import activation_checkpointing
from components.training.corrected_pairs import CorrectedCaptionPairs
from components.training.data_stream import ChatBatches, PreferenceBatches, sample_stream
from components.training.encode_memo import MemoStats
from components.training.grounding import GroundingFit, fit_connector, regions
from components.training.loop import LogFn, LoopResult, train
from components.training.objectives import (
    SUPERVISED_OBJECTIVES,
    Objective,
    PreferenceObjective,
)
from components.training.packing import packed_lm_objective
from components.training.preflight import PreflightReport, run_preflight
from components.training.reference import (
    ReferenceCache,
    WithReference,
    adapter_reference,
    own_batches,
)
from components.training.replay import ReplayBatches, WithReplay
from components.training.tower_cache import CacheStats, cached_tower
from components.training.val_probe import validation_probe

HELDOUT_IMAGES = 200  # the connector fit's held-out R^2 is a measurement: a few hundred images suffice


@dataclass
class StageRun:
    result: LoopResult
    dropped: int  # samples skipped because text + image tokens exceed max_length
    source_counts: dict[str, int] = field(default_factory=dict)  # samples drawn per source (mixture)
    grounding: GroundingFit | None = None  # the connector fit of a `ground_connector` stage
    # align with `rejected_from: model`: caption prompts the reference captioned, pairs rewritten
    corrections: dict[str, int] = field(default_factory=dict)
    preflight: PreflightReport | None = None  # the data pipeline's checks before the first step
    tower_cache: CacheStats | None = None  # the frozen vision tower's reuse of repeated images
    encode_memo: MemoStats | None = None  # the batches' reuse of encoded samples

    @property
    def skipped(self) -> int:
        return self.dropped


def ground_connector(model, processor, stage: StageBase, shards: Path) -> GroundingFit:
    """Fit the connector on the stage's annotated training images (single-image records with
    regions), at the fit's resolution; measured on the val split's first annotated images too."""
    def annotated(split: str):
        return ((s.images[0], s.record) for s in cached_samples(shard_paths(shards, split, stage.sources))
                if len(s.images) == 1 and regions(s.record))
    spec = stage.ground_connector
    image_processor = copy.deepcopy(processor.image_processor)
    if spec.longest_edge is not None:
        image_processor.size = {"longest_edge": spec.longest_edge}
        image_processor.do_image_splitting = spec.longest_edge > image_processor.max_image_size["longest_edge"]
    try:
        heldout = list(itertools.islice(annotated("val"), min(spec.images, HELDOUT_IMAGES)))
    except FileNotFoundError:  # a recipe without val shards for these sources
        heldout = []
    return fit_connector(model, image_processor, processor.tokenizer,
                         itertools.islice(annotated("train"), spec.images), spec.ridge, heldout,
                         name_position=spec.name_position, targets=spec.targets)


def run_stage(model, processor, stage: StageBase, shards: Path, *, seed: int, max_length: int,
              on_log: LogFn | None = None, checkpoint_dir: Path | None = None,
              reference_file: Path | None = None) -> StageRun:
    """Train `model` in place for one stage of the recipe: the runner of its kind picks the
    data stream and objective, and `stage.train` drives the loop.

    With `train.checkpoint_every` > 0, checkpoints go to `checkpoint_dir` and a re-run with the
    same directory resumes from the newest one at the same data position (the sample stream
    is seeded, so a fresh one replays the same batches and the loop skips those consumed).

    A stage with `ground_connector` first fits the connector to the LM's phrase embeddings
    on its sources' annotated training images (grounding.py); with `train.steps` 0 that fit
    is the whole stage. Before the first step, the pre-flight checks (preflight.py) run on
    the stage's first samples and fail the stage naming the sample that breaks one.

    `gradient_checkpointing` recomputes the vision tower's and the LM's layer activations in
    backward (transformers' own, non-reentrant). While the vision tower is frozen it computes
    each distinct image once, in the connector fit, the training and every later stage that
    keeps the same tower (tower_cache.py). An align stage with `reference: cached`
    computes the reference log-probs of every row it will train on before the first step,
    kept in `reference_file` when given (reused by a later run with the same reference model
    and data: the caller names the file after both)."""
    with cached_tower(model) as tower_stats:
        grounding = (ground_connector(model, processor, stage, shards)
                     if getattr(stage, "ground_connector", None) else None)
        run = (_train(model, processor, stage, shards, seed, max_length, on_log, checkpoint_dir,
                      reference_file)
               if stage.train.steps else StageRun(LoopResult(steps=0, samples=0, seconds=0.0), 0))
    run.grounding, run.tower_cache = grounding, tower_stats
    return run


def _train(model, processor, stage: StageBase, shards: Path, seed: int, max_length: int,
           on_log: LogFn | None, checkpoint_dir: Path | None, reference_file: Path | None
           ) -> StageRun:
    encoder = ChatEncoder(processor, max_length)
    plan = STAGE_RUNNERS[stage.kind](model, stage, shards, encoder, seed)
    # a fresh stream of the same seed: the checks see the stage's first samples, training
    # still starts from them
    fresh = sample_stream(shards, stage.sources, seed, getattr(stage, "text_ratio", None), stage.mixture)
    checked = run_preflight(model, encoder, fresh, plan.batches.encode,
                            packing=getattr(stage, "packing", False))
    probe = None
    if stage.train.eval_every:
        probe = validation_probe(shards, stage.sources, stage.kind, encoder, plan.val_objective,
                                 stage.train.batch_size)
    feed = plan.batches
    if getattr(stage, "reference", None) == "cached":
        feed = cached_reference(model, stage, shards, encoder, seed, plan.batches, probe, reference_file)
    if plan.replay is not None:
        feed = ReplayBatches(feed, plan.replay)
    with activation_checkpointing(model, stage.gradient_checkpointing):
        result = train(model, feed, stage.train, plan.objective, on_log,
                       checkpoint_dir=checkpoint_dir, on_eval=probe, seed=seed)
    corrections = ({"captions_judged": plan.samples.judged, "pairs_corrected": plan.samples.replaced}
                   if isinstance(plan.samples, CorrectedCaptionPairs) else {})
    dropped = plan.batches.skipped + (plan.replay.skipped if plan.replay is not None else 0)
    return StageRun(result, dropped, dict(getattr(plan.stream, "counts", {})),
                    corrections=corrections, preflight=checked, encode_memo=plan.batches.memo.stats)


def cached_reference(model, stage: AlignStage, shards: Path, encoder: ChatEncoder, seed: int,
                     batches, probe, path: Path | None) -> WithReference:
    """Fill the reference cache with the parent's (``model`` before any step) log-probs of the
    batches this process will train on (a fresh stream of the same seed replays them) and of
    the validation probe's; the training batches with them attached."""
    from accelerate import PartialState

    state = PartialState()
    if path is not None and state.num_processes > 1:
        path = path.with_name(f"{path.stem}.rank{state.process_index}-of-{state.num_processes}{path.suffix}")
    cache = ReferenceCache(path)
    model.to(state.device)
    fresh = preference_plan(model, stage, shards, encoder, seed).batches
    count = stage.train.steps * stage.train.grad_accum * state.num_processes
    cache.fill(model, own_batches(iter(fresh), count, state.process_index, state.num_processes))
    if probe is not None:
        cache.fill(model, probe.batches)
        probe.batches = [cache.attach(b) for b in probe.batches]
    return WithReference(batches, cache, state.process_index, state.num_processes)


@dataclass
class StagePlan:
    """What a stage kind trains on and how: its batches and objective."""

    stream: Any  # the sampled sources (counts per source for a mixture)
    samples: Any  # what the batches are made from (the stream, or pairs rewritten from it)
    batches: Any
    objective: Objective
    val_objective: Objective  # the validation probe's loss
    replay: Any = None  # supervised batches trained beside the align stage's pairs


def supervised_plan(model, stage: SupervisedStage, shards: Path, encoder: ChatEncoder,
                    seed: int) -> StagePlan:
    """Pretrain / SFT: chat batches (text-only mixed in, turns split or packed) under the
    next-token loss on the assistant tokens."""
    stream = sample_stream(shards, stage.sources, seed, stage.text_ratio, stage.mixture)
    batches = ChatBatches(stream, encoder, stage.train.batch_size, packing=stage.packing,
                          split_turns=stage.split_turns, question_types=stage.question_types)
    objective = packed_lm_objective if stage.packing else SUPERVISED_OBJECTIVES[stage.loss_average]
    return StagePlan(stream, stream, batches, objective,
                     SUPERVISED_OBJECTIVES["token"] if stage.packing else objective)


def preference_plan(model, stage: AlignStage, shards: Path, encoder: ChatEncoder,
                    seed: int) -> StagePlan:
    """Align: chosen/rejected pairs against the parent (SFT) model as the reference: a frozen
    copy (`copy`), the policy with its adapters off (`adapters`), or none here (`cached`: the
    batches bring the reference log-probs, see `cached_reference`)."""
    stream = sample_stream(shards, stage.sources, seed, None, stage.mixture)
    reference = {"copy": lambda: copy.deepcopy(model), "adapters": lambda: adapter_reference,
                 "cached": lambda: None}[stage.reference]()
    samples = (CorrectedCaptionPairs(stream, reference, encoder) if stage.rejected_from == "model"
               else stream)
    objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss,
                                    sft_weight=stage.sft_weight)
    batches = PreferenceBatches(samples, encoder, stage.train.batch_size)
    if stage.replay is None:
        return StagePlan(stream, samples, batches, objective, objective)
    replayed = ChatBatches(sample_stream(shards, stage.replay.sources, seed, None, None), encoder,
                           stage.replay.batch_size, packing=False, split_turns=stage.replay.split_turns)
    return StagePlan(stream, samples, batches, WithReplay(objective, stage.replay.weight),
                     objective, replay=replayed)


STAGE_RUNNERS: dict[str, Callable[..., StagePlan]] = {
    "pretrain": supervised_plan,
    "sft": supervised_plan,
    "align": preference_plan,
}
if tuple(STAGE_RUNNERS) != STAGE_KINDS:
    raise RuntimeError(f"stage runners {list(STAGE_RUNNERS)} != STAGE_KINDS {list(STAGE_KINDS)}")
