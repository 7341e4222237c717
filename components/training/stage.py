"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.shards import read_samples, shard_paths
from components.model.chat import ChatEncoder
from components.recipe import STAGE_KINDS, AlignStage, StageBase, SupervisedStage
from components.training.corrected_pairs import CorrectedCaptionPairs
from components.training.data_stream import ChatBatches, PreferenceBatches, sample_stream
from components.training.grounding import GroundingFit, fit_connector, regions
from components.training.loop import LogFn, LoopResult, train
from components.training.objectives import (
    SUPERVISED_OBJECTIVES,
    Objective,
    PreferenceObjective,
)
from components.training.packing import packed_lm_objective
from components.training.val_probe import validation_probe


@dataclass
class StageRun:
    result: LoopResult
    dropped: int  # samples skipped because text + image tokens exceed max_length
    source_counts: dict[str, int] = field(default_factory=dict)  # samples drawn per source (mixture)
    grounding: GroundingFit | None = None  # the connector fit of a `ground_connector` stage
    # align with `rejected_from: model`: caption prompts the reference captioned, pairs rewritten
    corrections: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.dropped


def ground_connector(model, processor, stage: StageBase, shards: Path) -> GroundingFit:
    """Fit the connector on the stage's annotated training images (single-image records with
    regions), at the fit's resolution; measured on the val split's annotated images too."""
    def annotated(split: str):
        return ((s.images[0], s.record) for s in read_samples(shard_paths(shards, split, stage.sources))
                if len(s.images) == 1 and regions(s.record))
    spec = stage.ground_connector
    image_processor = copy.deepcopy(processor.image_processor)
    if spec.longest_edge is not None:
        image_processor.size = {"longest_edge": spec.longest_edge}
        image_processor.do_image_splitting = spec.longest_edge > image_processor.max_image_size["longest_edge"]
    try:
        heldout = list(itertools.islice(annotated("val"), spec.images))
    except FileNotFoundError:  # a recipe without val shards for these sources
        heldout = []
    return fit_connector(model, image_processor, processor.tokenizer,
                         itertools.islice(annotated("train"), spec.images), spec.ridge, heldout)


def run_stage(model, processor, stage: StageBase, shards: Path, *, seed: int, max_length: int,
              on_log: LogFn | None = None, checkpoint_dir: Path | None = None) -> StageRun:
    """Train `model` in place for one stage of the recipe: the runner of its kind picks the
    data stream and objective, and `stage.train` drives the loop.

    With `train.checkpoint_every` > 0, checkpoints go to `checkpoint_dir` and a re-run with the
    same directory resumes from the newest one at the same data position (the sample stream
    is seeded, so a fresh one replays the same batches and the loop skips those consumed).

    A stage with `ground_connector` first fits the connector to the LM's phrase embeddings
    on its sources' annotated training images (grounding.py); with `train.steps` 0 that fit
    is the whole stage."""
    grounding = (ground_connector(model, processor, stage, shards)
                 if getattr(stage, "ground_connector", None) else None)
    if stage.train.steps == 0:
        return StageRun(LoopResult(steps=0, samples=0, seconds=0.0), 0, grounding=grounding)
    encoder = ChatEncoder(processor, max_length)
    plan = STAGE_RUNNERS[stage.kind](model, stage, shards, encoder, seed)
    probe = None
    if stage.train.eval_every:
        probe = validation_probe(shards, stage.sources, stage.kind, encoder, plan.val_objective,
                                 stage.train.batch_size)
    result = train(model, plan.batches, stage.train, plan.objective, on_log,
                   checkpoint_dir=checkpoint_dir, on_eval=probe, seed=seed)
    corrections = ({"captions_judged": plan.samples.judged, "pairs_corrected": plan.samples.replaced}
                   if isinstance(plan.samples, CorrectedCaptionPairs) else {})
    return StageRun(result, plan.batches.skipped, dict(getattr(plan.stream, "counts", {})),
                    grounding, corrections)


@dataclass
class StagePlan:
    """What a stage kind trains on and how: its batches and objective."""

    stream: Any  # the sampled sources (counts per source for a mixture)
    samples: Any  # what the batches are made from (the stream, or pairs rewritten from it)
    batches: Any
    objective: Objective
    val_objective: Objective  # the validation probe's loss


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
    """Align: chosen/rejected pairs against a frozen copy of the parent (SFT) model."""
    stream = sample_stream(shards, stage.sources, seed, None, stage.mixture)
    reference = copy.deepcopy(model)
    samples = (CorrectedCaptionPairs(stream, reference, encoder) if stage.rejected_from == "model"
               else stream)
    objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss,
                                    sft_weight=stage.sft_weight)
    return StagePlan(stream, samples, PreferenceBatches(samples, encoder, stage.train.batch_size),
                     objective, objective)


STAGE_RUNNERS: dict[str, Callable[..., StagePlan]] = {
    "pretrain": supervised_plan,
    "sft": supervised_plan,
    "align": preference_plan,
}
if tuple(STAGE_RUNNERS) != STAGE_KINDS:
    raise RuntimeError(f"stage runners {list(STAGE_RUNNERS)} != STAGE_KINDS {list(STAGE_KINDS)}")
