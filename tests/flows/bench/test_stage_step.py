"""`vlmforge bench stage-step` at minimal size: the tiny recipe's longest stage trains on real
generated shards with and without each saving, and the losses agree."""

from __future__ import annotations

import pytest

from flows.commands.bench import BENCHES
from tests.flows.bench.helpers import small_bench_json


def test_stage_step_bench_measures_every_saving_and_the_losses_agree(monkeypatch, capsys):
    import flows.bench.stage_step as bench

    assert "stage-step" in BENCHES
    out = small_bench_json(monkeypatch, capsys, "stage-step", bench, "bench_stage_step",
                           steps=3, images=16, repeats=1)
    assert out["stage"] == "pretrain-32px-bind"  # the tiny recipe's longest stage
    for arm in ("cache", "memo", "fused", "head", "all"):
        assert out[f"{arm}_ratio"] == pytest.approx(
            out["baseline_ms_per_step"] / out[f"{arm}_ms_per_step"], rel=0.05)
    assert out["max_loss_diff"] < 1e-4  # rounding, not a different result
