"""components.model.build: the one factory builds every architecture (and SPHINX fusion) from
a recipe whose backbones are local directories, with the stage's processor and unfreezing
schedule; options an architecture does not read are refused at load time."""

from __future__ import annotations

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from components.model.architectures import spec
from components.model.build import build_stage_model, save_vlm
from components.model.freeze import merge_lora
from components.recipe import Recipe
from tests.components.model.helpers import CLASSES, CLIP, SCHEDULES, saved_backbones

MICRO = dict(resampler_latents=4, resampler_depth=1, resampler_heads=2, cross_layer_interval=2)


def _recipe(arch: str, vision, text, **model) -> Recipe:
    options = {k: v for k, v in MICRO.items() if k in spec(arch).options}
    return Recipe.model_validate({
        "name": f"t-{arch}", "registered_model": f"vlm-{arch}", "backbones": None,
        "model": {"architecture": arch, "vision": vision, "text": text, **options, **model},
        "stages": [{"name": "pretrain", "kind": "pretrain", "longest_edge": 32,
                    "sources": ["scenes_caption"], "unfreeze": SCHEDULES[arch], "lora_rank": 4}]})


def stage_model(recipe: Recipe, stage):
    return build_stage_model(recipe.model, seed=recipe.seed, parent_dir=None, registered={},
                             longest_edge=stage.longest_edge, unfreeze=stage.unfreeze,
                             lora_rank=stage.lora_rank)


@pytest.mark.parametrize("arch", sorted(CLASSES))
def test_stage_model_assembles_each_architecture_from_a_recipe(arch, tokenizer, tmp_path):
    saved_backbones(arch, len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    recipe = _recipe(arch, str(tmp_path / "vision"), str(tmp_path / "lm"))
    model, processor, counts = stage_model(recipe, recipe.stages[0])
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
    model, _, counts = stage_model(recipe, recipe.stages[0])
    assert type(model.model.vision_tower).__name__ == "FusedVisionModel"
    assert model.model.multi_modal_projector.linear_1.in_features == 32 + 24
    with pytest.raises(ValueError, match="fusion_vision does not apply to architecture 'idefics3'"):
        _recipe("idefics3", str(tmp_path / "vision"), str(tmp_path / "lm"),
                fusion_vision=str(tmp_path / "dino"))


def test_inline_clip_tower_for_flamingo(tokenizer, tmp_path):
    saved_backbones("idefics", len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    recipe = _recipe("idefics", "inline", str(tmp_path / "lm"), vision_inline=CLIP)
    model, _, _ = stage_model(recipe, recipe.stages[0])
    assert model.config.vision_config.embed_dim == CLIP["hidden_size"]
    with pytest.raises(ValueError, match="vision_inline"):
        _recipe("idefics", "inline", str(tmp_path / "lm"))


def test_a_stage_model_is_built_and_reloaded_in_the_stages_dtype(tokenizer, tmp_path):
    """bf16: a new VLM is cast, a saved parent (fp32 on disk) loads in bf16; LoRA adapters
    sit on bf16 layers; fp32 reloads a bf16 checkpoint in fp32."""
    saved_backbones("idefics3", len(tokenizer), tmp_path)
    tokenizer.save_pretrained(tmp_path / "lm")
    recipe = _recipe("idefics3", str(tmp_path / "vision"), str(tmp_path / "lm"))
    stage = recipe.stages[0]

    def build(parent, dtype):
        return build_stage_model(recipe.model, seed=0, parent_dir=parent, registered={},
                                 longest_edge=32, unfreeze=stage.unfreeze, lora_rank=4, dtype=dtype)

    fp32, processor, _ = build(None, "fp32")
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    merge_lora(fp32)
    save_vlm(fp32, processor, tmp_path / "fp32")
    for parent in (None, tmp_path / "fp32"):
        model, _, counts = build(parent, "bf16")
        base = {p.dtype for n, p in model.named_parameters() if ".lora_" not in n}
        assert base == {torch.bfloat16} and counts["text"] > 0
    merge_lora(model)
    save_vlm(model, processor, tmp_path / "bf16")
    again, _, _ = build(tmp_path / "bf16", "fp32")
    assert {p.dtype for p in again.parameters()} == {torch.float32}
