"""`vlmforge bench memory` at the scaled-down shapes: the real bench (a fresh process per
setting, the stage code), its JSON and its ratios against each setting's baseline row."""

from __future__ import annotations

import pytest

from components.recipe import parse_stage
from flows.bench.memory import SETTINGS, stage_section, table
from flows.commands.bench import BENCHES
from tests.flows.bench.helpers import small_bench_json


def test_every_setting_is_a_valid_stage_with_a_baseline_of_its_kind():
    for name, (kind, _, options, baseline) in SETTINGS.items():
        stage = parse_stage(stage_section(name, 2))
        assert stage.kind == kind == SETTINGS[baseline][0]
        assert {k: getattr(stage, k) for k in options} == options
    assert {"sft_full_checkpointing", "align_full_cached"} <= set(SETTINGS)


@pytest.mark.slow  # a process per setting, ~27 s (make test-slow)
def test_the_bench_measures_each_setting_in_its_own_process(monkeypatch, capsys):
    import flows.bench.memory as bench

    assert "memory" in BENCHES
    out = small_bench_json(monkeypatch, capsys, "memory", bench, "bench_memory",
                           steps=2, scale="test", settings=("sft_full", "align_lora_adapters"))
    assert out["bench"] == "memory" and out["image_px"] == 512 and out["rows_per_step"] == 2
    rows = out["settings"]
    assert rows["sft_full"]["memory_ratio"] == rows["sft_full"]["time_ratio"] == 1.0
    assert rows["align_lora_adapters"]["trainable_m"] < rows["sft_full"]["trainable_m"]
    assert "memory_ratio" not in rows["align_lora_adapters"]  # its baseline was not run
    for row in rows.values():
        assert row["peak_mb"] > 0 and row["load_peak_mb"] > 0 and row["seconds_per_step"] > 0
        assert row["stage_seconds"] >= 2 * row["seconds_per_step"]
        assert row["tokens_per_step"] > 2 * 64  # two rows, each with the 64 image tokens
    assert "align_lora_adapters" in table(out)
