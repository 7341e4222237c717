"""The GPU recipes stay valid: each loads, its model assembles at real size from the hub
backbones' configs on the meta device (no weights, no download), has a plausible size, and
every stage's processor and unfreezing schedule apply to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.model.backbones import meta_backbone
from components.model.build import assemble, processor_for
from components.model.freeze import apply_unfreezing
from components.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[3]
HUB_CONFIGS = Path(__file__).parent / "hub_configs"
# recipe -> (total, vision tower, LM) parameter ranges, in millions
EXPECTED = {
    "smolvlm-256m": ((220, 260), (85, 95), (130, 140)),
    "idefics2-8b-style": ((7900, 8600), (400, 430), (7200, 7300)),
}


def meta_vlm(recipe, tokenizer):
    m = recipe.model
    vision = meta_backbone(HUB_CONFIGS / m.vision.replace("/", "--"))
    lm = meta_backbone(HUB_CONFIGS / m.text.replace("/", "--"))
    with torch.device("meta"):
        model = assemble(m, vision, lm, tokenizer, seed=recipe.seed)
    return vision, lm, model


def _pooling_head(vision) -> torch.nn.Module:
    """SigLIP's attention-pooling head, which a VLM does not use."""
    tower = getattr(vision, "vision_model", vision)
    return getattr(tower, "head", None) or torch.nn.Module()


def _millions(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gpu_recipe_assembles_at_real_size_without_weights(name, tokenizer):
    recipe = load_recipe(ROOT / "configs" / f"{name}.yaml")
    vision, lm, model = meta_vlm(recipe, tokenizer)
    assert all(p.is_meta for p in model.parameters())
    (total_lo, total_hi), (v_lo, v_hi), (t_lo, t_hi) = EXPECTED[name]
    assert v_lo < _millions(vision) < v_hi and t_lo < _millions(lm) < t_hi
    assert total_lo < _millions(model) < total_hi, _millions(model)
    # every backbone weight found its place: the VLM is backbones + the new connector only
    new = _millions(model.model.connector)
    assert _millions(model) == pytest.approx(
        _millions(lm) + _millions(vision) - _millions(_pooling_head(vision)) + new, abs=0.01)
    schedules = set()
    for stage in recipe.stages:
        processor = processor_for(model, tokenizer, stage.longest_edge)
        assert processor.image_seq_len == (64 if name == "smolvlm-256m" else recipe.model.resampler_latents)
        key = (tuple(sorted(stage.unfreeze.items())), stage.lora_rank)
        if key in schedules:
            continue  # same schedule as an earlier stage (LoRA on a 7B model takes seconds)
        schedules.add(key)
        counts = apply_unfreezing(model, stage.unfreeze, lora_rank=stage.lora_rank)
        for group, mode in stage.unfreeze.items():
            assert (counts[group] > 0) == (mode != "frozen"), (stage.name, group)
