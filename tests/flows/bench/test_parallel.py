"""`vlmforge bench parallel` at minimal size: real spawned processes train the tiny recipe's
model on real batches, one process on every core and one one-thread process per core."""

from __future__ import annotations

import os

import pytest

from flows.commands.bench import BENCHES
from tests.flows.bench.helpers import small_bench_json


def test_parallel_bench_times_both_layouts_and_reports_their_ratio(monkeypatch, capsys):
    import flows.bench.parallel as bench

    assert "parallel" in BENCHES
    out = small_bench_json(monkeypatch, capsys, "parallel", bench, "bench_parallel",
                           steps=2, repeats=1, batch_size=2)
    cores = os.cpu_count()
    assert out["bench"] == "parallel" and out["cores"] == cores
    one, many = out["samples_s_single"], out["samples_s_parallel"]
    assert one > 0 and many > 0
    assert out["ratio"] == pytest.approx(many / one, abs=0.02)  # from the unrounded rates
