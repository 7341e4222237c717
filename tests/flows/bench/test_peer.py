"""`vlmforge bench peer`: TRL trains on exactly the batches vlmforge's stage trains on, and the
bench runs both sides of SFT and DPO with their ratios (the whole bench is slow: five fresh
processes)."""

from __future__ import annotations

import pytest
import torch

from components.model.chat import ChatEncoder
from components.recipe import parse_stage
from components.training.stage import STAGE_RUNNERS
from flows.bench.memory import prepare
from flows.bench.peer import MAX_LENGTH, stage_batches, stage_model, stage_section, table
from flows.bench.smolvlm_shape import TEST
from tests.flows.bench.helpers import small_bench_json


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("peer")
    prepare(path, TEST)
    return path


@pytest.mark.parametrize("kind", ["sft", "align"])
def test_trl_gets_the_batches_the_stage_trains_on(root, kind):
    stage = parse_stage(stage_section(kind, 2))
    model, processor = stage_model(root, stage)
    theirs = stage_batches(root, stage, processor, 2)
    plan = STAGE_RUNNERS[kind](model, stage, root / "shards", ChatEncoder(processor, MAX_LENGTH), 0)
    ours = [b for _, b in zip(range(2), plan.batches, strict=False)]
    assert len(theirs) == len(ours) == 2
    for a, b in zip(theirs, ours, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_bench_runs_both_sides_and_prints_both_ratios(monkeypatch, capsys):
    import flows.bench.peer as bench
    out = small_bench_json(monkeypatch, capsys, "peer", bench, "bench_peer", steps=3)
    assert set(out["runs"]) == {"vlmforge_sft", "trl_sft", "vlmforge_dpo", "trl_dpo"}
    for kind in ("sft", "dpo"):
        assert out[f"{kind}_speed_ratio"] > 0 and out[f"{kind}_memory_ratio"] > 0
    assert "sft vlmforge / TRL: speed" in table(out)
