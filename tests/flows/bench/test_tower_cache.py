"""`vlmforge bench tower-cache` at minimal size: the recipe's frozen-tower stages train on
real generated shards with and without the cache, and the losses agree."""

from __future__ import annotations

import pytest

from flows.commands.bench import BENCHES
from tests.flows.bench.helpers import small_bench_json


def test_tower_cache_bench_trains_both_arms_to_the_same_losses(monkeypatch, capsys):
    import flows.bench.tower_cache as bench

    assert "tower-cache" in BENCHES
    out = small_bench_json(monkeypatch, capsys, "tower-cache", bench, "bench_tower_cache",
                           steps=2, images=8, repeats=1, longest_edges=(32,))
    row = {k.removeprefix("32px_"): v for k, v in out.items() if k.startswith("32px_")}
    assert row["stage"] == "pretrain-32px-bind" and not any(k.startswith("64px") for k in out)
    assert row["samples_s_uncached"] > 0 and row["samples_s_cached"] > 0
    assert row["ratio"] == pytest.approx(row["samples_s_cached"] / row["samples_s_uncached"], abs=0.02)
    assert 0 < row["hit_rate"] < 1  # 8 images, 64 rows: repeats, yet each image computed once
    assert row["max_loss_diff"] == 0.0


def test_by_default_the_bench_measures_each_resolution_the_recipe_trains_a_frozen_tower_at():
    from components.recipe import load_recipe
    from flows.bench.tower_cache import frozen_tower_edges

    assert frozen_tower_edges(load_recipe("configs/tiny.yaml")) == (32,)
    assert frozen_tower_edges(load_recipe("configs/micro.yaml")) == (32, 64)


def test_a_recipe_without_a_frozen_tower_stage_at_that_resolution_is_refused():
    from components.recipe import load_recipe
    from flows.bench.tower_cache import _frozen_stage

    with pytest.raises(ValueError, match="no trained frozen-tower stage at 48 px"):
        _frozen_stage(load_recipe("configs/tiny.yaml"), 48)
