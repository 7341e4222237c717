"""Supervised rows replayed beside the preference pairs of an align stage (InstructGPT's
PPO-ptx, Ouyang et al. 2022, sec. 3.5): preference tuning moves the whole LM, and skills that
no pair asks about (counting, say) drift with it, the "alignment tax". Each training batch
carries a batch of supervised conversations under ``REPLAY``-prefixed keys; the objective adds
``weight`` x their per-sample next-token loss to the preference loss."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from components.training.loop import cycle
from components.training.objectives import Objective, sample_mean_lm_objective

REPLAY = "replay."  # the key prefix of a batch's replayed supervised rows


class ReplayBatches:
    """Each preference batch with the next supervised batch under ``REPLAY`` keys; the
    supervised batches restart when they run out, so every preference batch gets one."""

    def __init__(self, batches: Iterable[dict], replay: Iterable[dict]):
        self.batches, self.replay = batches, replay

    def __iter__(self) -> Iterator[dict]:
        replayed = cycle(self.replay, "the replay sources yield no batch")
        for batch in self.batches:
            yield {**batch, **{REPLAY + k: v for k, v in next(replayed).items()}}


class WithReplay:
    """``objective`` on a batch's own rows, plus ``weight`` x the per-sample next-token loss
    on its replayed rows (logged as ``loss/replay``); a batch without them (the validation
    probe's) gets ``objective`` alone."""

    def __init__(self, objective: Objective, weight: float):
        self.objective, self.weight = objective, weight

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        own = {k: v for k, v in batch.items() if not k.startswith(REPLAY)}
        loss, metrics = self.objective(model, own)
        replayed = {k.removeprefix(REPLAY): v for k, v in batch.items() if k.startswith(REPLAY)}
        if not replayed:
            return loss, metrics
        supervised, _ = sample_mean_lm_objective(model, replayed)
        return loss + self.weight * supervised, {**metrics, "loss/replay": supervised.item()}
