"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from components.recipe import Stage
from components.training.batching import ChatEncoder
from components.training.data_stream import ChatBatches, PreferenceBatches, sample_stream
from components.training.loop import LogFn, LoopConfig, LoopResult, lm_objective, train
from components.training.objectives import PreferenceObjective
from components.training.packing import packed_lm_objective


@dataclass
class StageRun:
    result: LoopResult
    dropped: int  # samples skipped because text + image tokens exceed max_length

    @property
    def skipped(self) -> int:
        return self.dropped


def run_stage(model, processor, stage: Stage, shards: Path, loop: LoopConfig, *,
              max_length: int, on_log: LogFn | None = None) -> StageRun:
    """Train `model` in place on the stage's sources: assistant-only loss (text-only data at
    `stage.text_ratio`, rows packed with `stage.packing`), or a preference loss for align."""
    encoder = ChatEncoder(processor, max_length)
    samples = sample_stream(shards, stage.sources, loop.seed, stage.text_ratio)
    if stage.kind == "align":
        reference = copy.deepcopy(model)  # the frozen parent (SFT) model
        batches = PreferenceBatches(samples, encoder, stage.train.batch_size)
        objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss,
                                        sft_weight=stage.sft_weight)
    else:
        batches = ChatBatches(samples, encoder, stage.train.batch_size, packing=stage.packing)
        objective = packed_lm_objective if stage.packing else lm_objective
    result = train(model, batches, loop, objective, on_log)
    return StageRun(result, batches.skipped)
