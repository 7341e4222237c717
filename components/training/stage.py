"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from components.recipe import Stage
from components.training.batching import ChatEncoder
from components.training.data_stream import (
    ChatBatches,
    PreferenceBatches,
    SampleStream,
    shard_paths,
)
from components.training.loop import LogFn, LoopConfig, LoopResult, train
from components.training.objectives import PreferenceObjective


@dataclass
class StageRun:
    result: LoopResult
    dropped: int  # samples whose text + image tokens exceed max_length


def run_stage(model, processor, stage: Stage, shards: Path, loop: LoopConfig, *,
              max_length: int, on_log: LogFn | None = None) -> StageRun:
    """Train `model` in place on the stage's sources (assistant-only loss, or DPO/IPO for align)."""
    encoder = ChatEncoder(processor, max_length)
    samples = SampleStream(shard_paths(shards, "train", stage.sources), seed=loop.seed)
    if stage.kind == "align":
        reference = copy.deepcopy(model)  # the frozen parent (SFT) model
        batches = PreferenceBatches(samples, encoder, stage.train.batch_size)
        objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss)
        result = train(model, batches, loop, objective, on_log)
    else:
        batches = ChatBatches(samples, encoder, stage.train.batch_size)
        result = train(model, batches, loop, on_log=on_log)
    return StageRun(result, batches.dropped)
