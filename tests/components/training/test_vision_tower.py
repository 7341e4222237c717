"""The contrastive vision tower: SigLIP- or CLIP-shaped, trained with the sigmoid loss; the
standalone tower it returns is the tower that trained, and loads the way users load one."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipConfig, SiglipVisionModel

from components.model.backbones import (
    images_to_tensor,
    load_vision_backbone,
    tiny_text_tower_config,
    tiny_vision_config,
)
from components.recipe import TrainSettings
from components.training.backbones import (
    embed_images,
    text_length,
    train_vision_tower,
    zero_shot_accuracy,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
           "yellow": (240, 210, 20)}
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             image_size=32, patch_size=8)


def _pairs(n: int):
    names = list(COLOURS)
    return ([Image.new("RGB", (32, 32), COLOURS[names[i % 4]]) for i in range(n)],
            [f"a {names[i % 4]} page" for i in range(n)])


@pytest.mark.parametrize("shape", ["siglip", "clip"])
def test_the_tower_learns_captions_and_comes_back_whole(shape, tokenizer, tmp_path):
    tokenizer = copy.deepcopy(tokenizer)  # padded, truncated encoding leaves the shared one as it was
    images, captions = _pairs(64)
    config = SiglipConfig(text_config=tiny_text_tower_config(
        len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=2,
        projection_size=32).to_dict(),
                          vision_config=tiny_vision_config(**TOWER).to_dict())
    clip = CLIPVisionConfig(**TOWER) if shape == "clip" else None
    settings = TrainSettings(steps=40, batch_size=16, lr=3e-3, warmup_steps=2, log_every=10)
    vision, result, dual = train_vision_tower(images, captions, None, tokenizer, config, settings,
                                              clip_vision=clip)
    assert result.mean_loss(first=False) < result.mean_loss(first=True)
    assert type(vision) is (CLIPVisionModel if shape == "clip" else SiglipVisionModel)
    assert zero_shot_accuracy(dual, images[:16], captions[:16], sorted(set(captions)), tokenizer) == 1.0
    pixels = images_to_tensor(images[:4], 32)
    vision.save_pretrained(tmp_path)
    loaded = load_vision_backbone(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(embed_images(loaded, pixels), embed_images(dual.vision_model.eval(), pixels))


def test_the_text_tower_is_as_long_as_the_longest_caption(tokenizer):
    captions = ["a red circle.", "a blue square at the top left and a green star at the bottom right."]
    longest = max(len(tokenizer(c, add_special_tokens=False).input_ids) for c in captions)
    assert text_length(tokenizer, captions, 48) == longest < 48
    assert text_length(tokenizer, captions, 4) == 4  # the limit wins
