"""flows.models builds every architecture (and SPHINX fusion) from a recipe whose backbones
are local directories, with the stage's processor and unfreezing schedule."""

from __future__ import annotations

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from components.model.freeze import merge_lora
from components.recipe import Recipe
from flows.models import save_vlm, stage_model
from tests.model.helpers import CLASSES, CLIP, SCHEDULES, saved_backbones


def _recipe(arch: str, vision, text, **model) -> Recipe:
    return Recipe.model_validate({
        "name": f"t-{arch}", "registered_model": f"vlm-{arch}", "backbones": None,
        "model": {"architecture": arch, "vision": vision, "text": text, "resampler_latents": 4,
                  "resampler_depth": 1, "resampler_heads": 2, "cross_layer_interval": 2, **model},
        "stages": [{"name": "pretrain", "kind": "pretrain", "longest_edge": 32,
                    "sources": ["scenes_caption"], "unfreeze": SCHEDULES[arch], "lora_rank": 4}]})


@pytest.mark.parametrize("arch", sorted(CLASSES))
def test_stage_model_assembles_each_architecture_from_a_recipe(arch, tokenizer, tmp_path):
    saved_backbones(arch, len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    recipe = _recipe(arch, str(tmp_path / "vision"), str(tmp_path / "lm"))
    model, processor, counts = stage_model(recipe, recipe.stages[0], "backbones:x", {})
    assert type(model).__name__ == CLASSES[arch]
    assert set(counts) == set(SCHEDULES[arch]) and counts["connector"] > 0
    merge_lora(model)
    save_vlm(model, processor, tmp_path / "vlm")
    assert (tmp_path / "vlm" / "model.safetensors").exists()


def test_recipe_fusion_vision_builds_sphinx_llava(tokenizer, tmp_path):
    saved_backbones("llava", len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                             image_size=28, patch_size=14)).save_pretrained(tmp_path / "dino")
    recipe = _recipe("llava", str(tmp_path / "vision"), str(tmp_path / "lm"),
                     fusion_vision=str(tmp_path / "dino"))
    model, _, counts = stage_model(recipe, recipe.stages[0], "backbones:x", {})
    assert type(model.model.vision_tower).__name__ == "FusedVisionModel"
    assert model.model.multi_modal_projector.linear_1.in_features == 32 + 24
    with pytest.raises(ValueError, match="llava"):
        stage_model(_recipe("idefics3", str(tmp_path / "vision"), str(tmp_path / "lm"),
                            fusion_vision=str(tmp_path / "dino")), recipe.stages[0], "backbones:x", {})


def test_inline_clip_tower_for_flamingo(tokenizer, tmp_path):
    saved_backbones("idefics", len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    recipe = _recipe("idefics", "inline", str(tmp_path / "lm"), vision_inline=CLIP)
    model, _, _ = stage_model(recipe, recipe.stages[0], "backbones:x", {})
    assert model.config.vision_config.embed_dim == CLIP["hidden_size"]
    with pytest.raises(ValueError, match="vision_inline"):
        _recipe("idefics", "inline", str(tmp_path / "lm"))
