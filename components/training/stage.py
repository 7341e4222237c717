"""One VLM training stage, independent of orchestration: data stream, objective, loop."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from components.recipe import Stage
from components.training.batching import ChatEncoder
from components.training.data_stream import ChatBatches, PreferenceBatches, sample_stream
from components.training.loop import LogFn, LoopConfig, LoopResult, lm_objective, train
from components.training.objectives import PreferenceObjective
from components.training.packing import packed_lm_objective
from components.training.val_probe import validation_probe


@dataclass
class StageRun:
    result: LoopResult
    dropped: int  # samples skipped because text + image tokens exceed max_length
    source_counts: dict[str, int] = field(default_factory=dict)  # samples drawn per source (mixture)

    @property
    def skipped(self) -> int:
        return self.dropped


def run_stage(model, processor, stage: Stage, shards: Path, loop: LoopConfig, *,
              max_length: int, on_log: LogFn | None = None,
              checkpoint_dir: Path | None = None) -> StageRun:
    """Train `model` in place on the stage's sources: assistant-only loss (text-only data at
    `stage.text_ratio`, rows packed with `stage.packing`), or a preference loss for align.

    With `loop.checkpoint_every` > 0, checkpoints go to `checkpoint_dir` and a re-run with the
    same directory resumes from the newest one at the same data position (the sample stream
    is seeded, so a fresh one replays the same batches and the loop skips those consumed)."""
    encoder = ChatEncoder(processor, max_length)
    samples = sample_stream(shards, stage.sources, loop.seed, stage.text_ratio, stage.mixture)
    if stage.kind == "align":
        reference = copy.deepcopy(model)  # the frozen parent (SFT) model
        batches = PreferenceBatches(samples, encoder, stage.train.batch_size)
        objective = PreferenceObjective(reference, beta=stage.beta, loss_type=stage.loss,
                                        sft_weight=stage.sft_weight)
    else:
        batches = ChatBatches(samples, encoder, stage.train.batch_size, packing=stage.packing,
                              split_turns=stage.split_turns)
        objective = packed_lm_objective if stage.packing else lm_objective
    probe = None
    if loop.eval_every:
        probe = validation_probe(shards, stage.sources, stage.kind, encoder,
                                 objective if stage.kind == "align" else lm_objective,
                                 stage.train.batch_size)
    result = train(model, batches, loop, objective, on_log, checkpoint_dir=checkpoint_dir,
                   on_eval=probe)
    return StageRun(result, batches.skipped, dict(getattr(samples, "counts", {})))
