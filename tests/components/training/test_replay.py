"""Replayed supervised rows beside preference pairs: the batches and the objective."""

from __future__ import annotations

import pytest
import torch

from components.training.replay import REPLAY, ReplayBatches, WithReplay


def test_every_preference_batch_gets_a_replayed_batch_and_the_replay_restarts():
    batches = [{"input_ids": torch.tensor([i])} for i in range(5)]
    replay = [{"input_ids": torch.tensor([10 + i])} for i in range(2)]
    out = list(ReplayBatches(batches, replay))
    assert [int(b["input_ids"]) for b in out] == [0, 1, 2, 3, 4]
    assert [int(b[REPLAY + "input_ids"]) for b in out] == [10, 11, 10, 11, 10]


def test_replay_sources_without_a_batch_are_an_error():
    with pytest.raises(ValueError, match="replay sources yield no batch"):
        list(ReplayBatches([{"input_ids": torch.tensor([0])}], []))


class _Model(torch.nn.Module):
    """Logits that put probability p on token 1 everywhere (at the kept positions, flattened,
    given a boolean ``logits_to_keep``, as transformers' models do)."""

    def __init__(self, p: float):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor([0.0, float(torch.logit(torch.tensor(p)))]))

    def forward(self, input_ids, logits_to_keep=0, **_):
        logits = self.logit.expand(*input_ids.shape, 2)
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[logits_to_keep]
        return type("Out", (), {"logits": logits})()


def test_the_objective_adds_weight_times_the_replayed_nll_and_leaves_a_plain_batch_alone():
    own = lambda model, batch: (torch.tensor(2.0), {"loss/own": 2.0})  # noqa: E731
    objective = WithReplay(own, weight=0.5)
    plain = {"input_ids": torch.zeros(1, 3, dtype=torch.long)}
    assert objective(_Model(0.25), plain) == (torch.tensor(2.0), {"loss/own": 2.0})
    labels = torch.tensor([[-100, 1, 1]])  # two labelled tokens of token 1, each at p = 0.25
    batch = {**plain, REPLAY + "input_ids": torch.zeros(1, 3, dtype=torch.long), REPLAY + "labels": labels}
    loss, metrics = objective(_Model(0.25), batch)
    nll = -torch.log(torch.tensor(0.25)).item()
    assert metrics["loss/replay"] == pytest.approx(nll, rel=1e-5)
    assert loss.item() == pytest.approx(2.0 + 0.5 * nll, rel=1e-5)
