"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from components.data.shards import read_samples
from components.recipe import Stage
from components.training.batching import ChatEncoder
from components.training.corrected_pairs import CorrectedCaptionPairs
from components.training.data_stream import (
    ChatBatches,
    PreferenceBatches,
    sample_stream,
    shard_paths,
)
from components.training.grounding import GroundingFit, fit_connector, regions
from components.training.loop import LogFn, LoopConfig, LoopResult, lm_objective, train
from components.training.objectives import PreferenceObjective, sample_mean_lm_objective
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


def ground_connector(model, processor, stage: Stage, shards: Path) -> GroundingFit:
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


def run_stage(model, processor, stage: Stage, shards: Path, loop: LoopConfig, *,
              max_length: int, on_log: LogFn | None = None,
              checkpoint_dir: Path | None = None) -> StageRun:
    """Train `model` in place on the stage's sources: assistant-only loss (text-only data at
    `stage.text_ratio`, rows packed with `stage.packing`), or a preference loss for align.

    With `loop.checkpoint_every` > 0, checkpoints go to `checkpoint_dir` and a re-run with the
    same directory resumes from the newest one at the same data position (the sample stream
    is seeded, so a fresh one replays the same batches and the loop skips those consumed).

    A stage with `ground_connector` first fits the connector to the LM's phrase embeddings
    on its sources' annotated training images (grounding.py); with `train.steps` 0 that fit
    is the whole stage."""
    grounding = ground_connector(model, processor, stage, shards) if stage.ground_connector else None
    if loop.steps == 0:
        return StageRun(LoopResult(steps=0, samples=0, seconds=0.0), 0, grounding=grounding)
    encoder = ChatEncoder(processor, max_length)
    stream = samples = sample_stream(shards, stage.sources, loop.seed, stage.text_ratio, stage.mixture)
    if stage.kind == "align":
        reference = copy.deepcopy(model)  # the frozen parent (SFT) model
        if stage.rejected_from == "model":
            samples = CorrectedCaptionPairs(samples, reference, encoder)
        batches = PreferenceBatches(samples, encoder, stage.train.batch_size)
        objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss,
                                        sft_weight=stage.sft_weight)
    else:
        batches = ChatBatches(samples, encoder, stage.train.batch_size, packing=stage.packing,
                              split_turns=stage.split_turns, question_types=stage.question_types)
        objective = (packed_lm_objective if stage.packing
                     else sample_mean_lm_objective if stage.loss_average == "sample" else lm_objective)
    probe = None
    if loop.eval_every:
        probe = validation_probe(shards, stage.sources, stage.kind, encoder,
                                 lm_objective if stage.packing else objective,
                                 stage.train.batch_size)
    result = train(model, batches, loop, objective, on_log, checkpoint_dir=checkpoint_dir,
                   on_eval=probe)
    corrections = ({"captions_judged": samples.judged, "pairs_corrected": samples.replaced}
                   if isinstance(samples, CorrectedCaptionPairs) else {})
    return StageRun(result, batches.skipped, dict(getattr(stream, "counts", {})), grounding, corrections)
