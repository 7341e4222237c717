"""`vlmforge bench overhead` and `vlmforge bench pixel-shuffle` at minimal size: the real
benches (tiny recipe model, real batches, both loops), JSON fields and token counts."""

from __future__ import annotations

from flows.bench.overhead import bare_loop, platform_loop, tiny_setup
from flows.bench.pixel_shuffle import bench_pixel_shuffle
from flows.commands.bench import BENCHES
from tests.flows.bench.helpers import small_bench_json


def test_overhead_bench_runs_both_loops_and_reports_a_ratio(monkeypatch, capsys):
    import flows.bench.overhead as bench

    assert {"overhead", "pixel-shuffle"} <= set(BENCHES)
    out = small_bench_json(monkeypatch, capsys, "overhead", bench, "bench_overhead",
                           steps=2, repeats=1, batch_size=2)
    assert out["bench"] == "overhead" and out["image_px"] == 64
    assert {"platform_step_ms", "bare_step_ms", "ratio", "goal", "cpu_time_ratio",
            "platform_setup_ms", "bare_setup_ms", "torch_threads"} <= set(out)
    # CPU time of 2 steps of a real model: positive even on a busy machine (wall may not be)
    assert out["platform_cpu_step_ms"] > 0 and out["bare_cpu_step_ms"] > 0
    assert out["image_tokens"] == 20  # tiny.yaml: 4 tiles + global view, 4 tokens each


def test_both_loops_train_the_same_model_from_the_same_weights():
    import torch

    setup = tiny_setup(4, batch_size=2, n_batches=1)
    initial = {k: v.clone() for k, v in setup.model.state_dict().items()}
    batch = setup.batches[0]
    with torch.no_grad():
        before = setup.model(**batch).loss.item()
    bare_loop(setup.model, setup.batches, steps=3, lr=1e-3)
    with torch.no_grad():
        after_bare = setup.model(**batch).loss.item()
    setup.model.load_state_dict(initial)
    platform_loop(setup.model, setup.batches, steps=3, lr=1e-3)
    with torch.no_grad():
        after_platform = setup.model(**batch).loss.item()
    assert after_bare < before and after_platform < before


def test_pixel_shuffle_bench_counts_image_tokens_per_factor():
    out = bench_pixel_shuffle(steps=1, repeats=1, batch_size=1)
    # a 64 px image: 2x2 tiles + global view, 8x8 patches each -> 5 * 64 / f^2 tokens
    assert [out[f"f{f}_image_tokens"] for f in (1, 2, 4)] == [320, 80, 20]
    assert (out["f1_tokens_per_sample"] > out["f2_tokens_per_sample"]
            > out["f4_tokens_per_sample"])
    assert {"f1_step_ms", "f2_step_ms", "f4_step_ms", "ratio"} <= set(out)
    assert out["f1_connector_params"] < out["f4_connector_params"]  # input width f^2 x
