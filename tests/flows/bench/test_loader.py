"""`vlmforge bench loader` at minimal size: both rates, their ratio, the stage measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.bench.loader import bench_loader
from flows.commands.bench import BENCHES

ROOT = Path(__file__).resolve().parents[3]


def test_bench_loader_measures_both_rates_and_the_ratio():
    assert "loader" in BENCHES
    out = json.loads(json.dumps(bench_loader(str(ROOT / "configs/micro.yaml"), per_source=8,
                                             batches=2, steps=1, workers=1)))
    assert out["recipe"] == "micro"
    assert out["stage"] == "pretrain-64px" and out["longest_edge"] == 64 and out["image_size"] == 64
    assert out["loader_samples_per_s"] > 0 and out["train_samples_per_s"] > 0
    assert out["ratio"] == pytest.approx(
        out["loader_samples_per_s"] / out["train_samples_per_s"], rel=0.02)
    assert out["cpu_ratio"] == pytest.approx(
        out["train_cpu_ms_sample"] / out["loader_cpu_ms_sample"], rel=0.05)
    assert out["loader_batches"] == 2 and out["training_steps"] == 1


def test_by_default_the_bench_takes_the_last_pretrain_stage_at_the_top_resolution():
    from components.recipe import load_recipe
    from flows.bench.loader import _stage_at

    assert _stage_at(load_recipe(ROOT / "configs/micro.yaml"), None).name == "pretrain-64px"
    assert _stage_at(load_recipe(ROOT / "configs/tiny.yaml"), None).name == "pretrain-32px-ocr"


def test_a_recipe_without_a_stage_at_the_size_is_refused():
    with pytest.raises(ValueError, match="no pretrain/sft stage at 48 px"):
        bench_loader(str(ROOT / "configs/micro.yaml"), longest_edge=48)
