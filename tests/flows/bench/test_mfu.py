"""`vlmforge bench mfu` at the scaled-down shapes on the CPU: the FLOPs count against a hand
count, the JSON, MFU from the measured tokens/s and the given peak."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.bench.mfu import Settings, Shape, Tower, bench_mfu, peak_flops, step_flops, table
from flows.bench.smolvlm_shape import RECIPE, TEST, hub_config
from flows.commands.bench import BENCHES, run_bench


def test_step_flops_is_6n_plus_the_attention_term_per_tower():
    shape = Shape(vision=Tower(100, 2, 8), connector=50, text=Tower(1000, 3, 16), head=300,
                  patches=16, image_tokens=4, image_token_id=9)
    vision = 6 * 100 * (2 * 16) + 12 * 2 * 8 * 16 * (2 * 16)  # 2 images of 16 patches
    connector = 6 * 50 * 2 * 4  # 2 images of 4 tokens
    text = 6 * 1000 * 40 + 12 * 3 * 16 * 32 * 40  # 40 tokens in rows of 32
    head = 6 * 300 * 5  # the head only where 5 labelled tokens are predicted
    assert vision + connector + text + head == 1_106_184
    assert step_flops(shape, tokens=40, row_length=32, images=2, labelled=5) == 1_106_184


def test_the_peak_table_knows_h100_class_gpus_and_no_other():
    assert peak_flops("NVIDIA H100 80GB HBM3") == peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_flops("NVIDIA L4") == 121e12
    for other in ("NVIDIA L40S", "NVIDIA H100 NVL", "NVIDIA GH200 480GB", "cpu"):
        assert peak_flops(other) is None


@pytest.fixture(scope="module")
def result():
    return bench_mfu(Settings(steps=3, warmup=1, batch_size=1, max_length=256), peak_tflops=0.5,
                     scale="test")


def test_mfu_is_the_measured_tokens_per_s_times_flops_per_token_over_the_peak(result):
    assert (result["dtype"], result["packing"], result["gradient_checkpointing"]) == ("bf16", True, True)
    assert result["tokens_per_s"] > 0 and result["seconds_per_step"] > 0 and result["peak_memory_mb"] > 0
    assert result["images_per_step"] >= 1 and result["tokens_per_step"] > 64
    assert 0 < result["labelled_per_step"] < result["tokens_per_step"]  # the head: answers only
    expected = result["tokens_per_s"] * result["model_flops_per_token"] / 0.5e12  # the given peak
    assert result["mfu"] == pytest.approx(expected, rel=1e-3, abs=1e-4)  # mfu: 4 decimals
    assert result["model_tflops_per_s"] == pytest.approx(result["mfu"] * 0.5, rel=1e-2, abs=1e-3)
    assert result["meets_target"] == (result["mfu"] >= result["target_mfu"] == 0.4)
    assert "MFU" in table(result) and (result["note"] is None) == (result["device"] != "cpu")


def test_the_counted_parameters_match_a_hand_count_of_the_configs(result):
    """Embedding lookups left out (SigLIP's positions, the LM's input embedding), the tied
    LM head counted once."""
    from components.model.random_backbones import scaled, vision_part

    model = yaml.safe_load(RECIPE.read_text())["model"]
    v = scaled(vision_part(hub_config(model["vision"])), width=TEST.vision_width, layers=TEST.vision_layers)
    t = scaled(hub_config(model["text"]), width=TEST.text_width, layers=TEST.text_layers)
    h, i = v["hidden_size"], v["intermediate_size"]
    vision = (3 * 16 * 16 * h + h  # the patch embedding
              + v["num_hidden_layers"] * (4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h)
              + 2 * h)  # post-layernorm
    ht, it = t["hidden_size"], t["intermediate_size"]
    kv = t["num_key_value_heads"] * ht // t["num_attention_heads"]
    text = t["num_hidden_layers"] * (2 * ht * ht + 2 * ht * kv + 3 * ht * it + 2 * ht) + ht
    connector = h * 4 ** 2 * ht  # pixel shuffle 4, one projection without bias
    assert result["flops_params"] == {"vision": vision, "connector": connector, "text": text,
                                      "head": t["vocab_size"] * ht}


def test_the_bench_command_prints_the_json_and_passes_the_peak(monkeypatch, capsys):
    import flows.bench.mfu as bench

    assert "mfu" in BENCHES
    monkeypatch.setattr(bench, "bench_mfu", lambda peak_tflops=None: {"mfu": None, "peak": peak_tflops})
    assert run_bench("mfu", "configs/tiny.yaml", as_json=True, peak_tflops=7.0) == 0
    assert json.loads(capsys.readouterr().out) == {"bench": "mfu", "mfu": None, "peak": 7.0}
