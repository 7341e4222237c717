"""SPHINX fusion: the fused tower is exactly [primary | resized secondary] per patch, trains
inside LLaVA, saves and reloads; its extra cost is measured."""

from __future__ import annotations

import torch
from transformers import AutoModelForImageTextToText, Dinov2Config, Dinov2Model

from components.model.architectures.llava import llava_processor
from components.model.backbones import load_text_backbone, load_vision_backbone
from components.model.freeze import apply_unfreezing
from components.model.fusion import assemble_sphinx_llava, fusion_cost
from tests.components.model.helpers import LM, SIGLIP, colour_batch, fit

DINO = dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
            image_size=28, patch_size=14)  # 2x2 patches + CLS, resized to SigLIP's 4x4 grid


def _towers(tokenizer, tmp_path):
    torch.manual_seed(0)
    load_vision_backbone(SIGLIP).save_pretrained(tmp_path / "siglip")
    Dinov2Model(Dinov2Config(**DINO)).save_pretrained(tmp_path / "dino")
    load_text_backbone(LM, vocab_size=len(tokenizer)).save_pretrained(tmp_path / "lm")
    return (load_vision_backbone(tmp_path / "siglip"), load_vision_backbone(tmp_path / "dino"),
            load_text_backbone(tmp_path / "lm"))


def test_fused_features_are_both_towers_per_patch(tokenizer, tmp_path):
    siglip, dino, lm = _towers(tokenizer, tmp_path)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    model = assemble_sphinx_llava(siglip, dino, lm, tokenizer, secondary_mean=mean,
                                  secondary_std=std).eval()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        fused = model.model.vision_tower(pixel_values=pixels).last_hidden_state
        assert fused.shape == (2, 16, 32 + 24)
        assert torch.equal(fused[..., :32], siglip(pixel_values=pixels).last_hidden_state)
        small = torch.nn.functional.interpolate(pixels, size=(28, 28), mode="bilinear")
        small = ((small * 0.5 + 0.5) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        b = dino(pixel_values=small).last_hidden_state[:, 1:]  # drop CLS: 2x2 grid
        b = torch.nn.functional.interpolate(b.transpose(1, 2).reshape(2, 24, 2, 2), size=(4, 4),
                                            mode="bilinear").flatten(2).transpose(1, 2)
        assert torch.allclose(fused[..., 32:], b, atol=1e-6)
    assert model.model.multi_modal_projector.linear_1.in_features == 56


def test_sphinx_llava_trains_saves_and_reloads(tokenizer, tmp_path):
    siglip, dino, lm = _towers(tokenizer, tmp_path)
    model = assemble_sphinx_llava(siglip, dino, lm, tokenizer)
    processor = llava_processor(model, tokenizer, 32)
    counts = apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "lora"},
                              lora_rank=4)
    assert counts["vision"] == 0
    batch = colour_batch(processor)
    losses = fit(model, batch, 10)
    assert losses[-1] < 0.6 * losses[0], losses
    from components.model.freeze import merge_lora

    merge_lora(model).eval()
    model.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_fusion_cost_is_measured(tokenizer, tmp_path):
    siglip, dino, _ = _towers(tokenizer, tmp_path)
    cost = fusion_cost(siglip, dino)
    assert cost["secondary_params_m"] == sum(p.numel() for p in dino.parameters()) / 1e6
    assert 0 < cost["extra_flops_pct"] and 0 < cost["extra_params_pct"]
