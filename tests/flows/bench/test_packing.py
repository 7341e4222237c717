"""`vlmforge bench packing` at minimal size: packing leaves less padding than plain batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.bench.packing import bench_packing
from flows.commands.bench import BENCHES

ROOT = Path(__file__).resolve().parents[3]


def test_packing_pads_less_than_plain_batches_on_the_sft_mixture():
    assert "packing" in BENCHES
    out = bench_packing(str(ROOT / "configs/micro.yaml"), per_source=12, samples=40)
    assert out["stage"] == "sft" and out["samples"] > 0
    assert 0 <= out["padding_packed"] < out["padding_unpacked"] < 1
    assert out["ratio"] == pytest.approx(out["padding_unpacked"] / out["padding_packed"], rel=0.05)
