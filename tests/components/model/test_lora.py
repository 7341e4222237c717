"""LoRA unfreezing: the trainable set is exactly the adapters, counts are right, and merging
gives back a stock model computing the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText

from components.model.freeze import apply_unfreezing, has_lora, merge_lora
from tests.components.model.helpers import build, colour_batch

SCHEDULE = {"vision": "lora", "connector": "full", "text": "lora"}


def test_lora_counts_are_the_adapters_of_every_linear_in_the_group(tokenizer, tmp_path):
    _, _, model, _ = build("idefics3", tokenizer, tmp_path)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    expected = {g: sum(4 * (m.in_features + m.out_features) for n, m in linears.items()
                       if n.startswith(prefix))
                for g, prefix in (("vision", "model.vision_model."), ("text", "model.text_model."))}
    connector = sum(p.numel() for p in model.model.connector.parameters())
    counts = apply_unfreezing(model, SCHEDULE, lora_rank=4)
    assert counts == {"vision": expected["vision"], "connector": connector, "text": expected["text"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or n.startswith("model.connector.") for n in trainable)
    assert not model.lm_head.weight.requires_grad  # the head gets no adapter and stays frozen


def test_merged_model_is_stock_and_computes_the_same(tokenizer, tmp_path):
    _, _, model, processor = build("llava", tokenizer, tmp_path)
    apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "lora"}, lora_rank=4)
    with torch.no_grad():  # move the adapters off zero so merging has something to fold in
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    batch = colour_batch(processor)
    with torch.no_grad():
        before = model(**batch).logits
        merge_lora(model)
        after = model(**batch).logits
    assert not has_lora(model)
    assert torch.allclose(before, after, atol=1e-5)
    model.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, after, atol=1e-6)


def test_a_new_stage_merges_the_parents_adapters_first(tokenizer, tmp_path):
    _, _, model, _ = build("idefics2", tokenizer, tmp_path)
    apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "lora"}, lora_rank=2)
    counts = apply_unfreezing(model, {"vision": "frozen", "connector": "frozen", "text": "full"})
    assert not has_lora(model) and counts["connector"] == 0
    assert counts["text"] == sum(p.numel() for p in model.model.text_model.parameters()) + \
        model.lm_head.weight.numel()


def test_schedule_must_name_each_group_of_the_architecture(tokenizer, tmp_path):
    _, _, model, _ = build("idefics", tokenizer, tmp_path)
    with pytest.raises(ValueError, match="schedule names"):
        apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "frozen"})
    with pytest.raises(ValueError, match="unknown mode"):
        apply_unfreezing(model, {"vision": "frozen", "connector": "full", "cross_attn": "half",
                                 "text": "frozen"})
    counts = apply_unfreezing(model, {"vision": "frozen", "connector": "frozen", "cross_attn": "lora",
                                      "text": "frozen"})
    assert counts["text"] == 0 and counts["cross_attn"] > 0 and counts["connector"] == 0
    # the cross-attention's key and value projections belong to the connector: no adapters there
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if ".lora_" in n}
    assert adapted and all(".cross_attn." not in n or not n.endswith(("k_proj", "v_proj")) for n in adapted)
    assert any(n.endswith("cross_attn.q_proj") for n in adapted)


def test_adapters_start_the_same_whatever_ran_before(tokenizer, tmp_path):
    adapters = []
    for seed in (1, 2):  # a different global RNG state before each injection
        _, _, model, _ = build("idefics3", tokenizer, tmp_path / str(seed))
        torch.manual_seed(seed)
        apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "lora"})
        adapters.append({k: v for k, v in model.state_dict().items() if "lora_A" in k})
    assert adapters[0] and adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(v, adapters[1][k]) for k, v in adapters[0].items())
