"""Assembly copies the backbones exactly, pixel shuffle has the right shapes, and the
saved VLM loads with the Auto classes through the same from_pretrained path users take."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    SiglipVisionModel,
)

from components.model.architectures.idefics3 import (
    assemble_idefics3,
    build_processor,
    image_seq_len,
)
from components.model.freeze import apply_unfreezing


def test_assembled_towers_match_standalone_backbones(backbones, tokenizer, tmp_path):
    vision, lm = backbones
    vision.save_pretrained(tmp_path / "vision")
    lm.save_pretrained(tmp_path / "lm")
    vision = SiglipVisionModel.from_pretrained(tmp_path / "vision")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=2).eval()

    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, len(tokenizer), (2, 7))
    with torch.no_grad():
        assert torch.equal(vision(pixel_values=pixels).last_hidden_state,
                           model.model.vision_model(pixel_values=pixels).last_hidden_state)
        hidden = model.model.text_model(input_ids=ids).last_hidden_state
        assert torch.equal(lm(input_ids=ids).logits, model.lm_head(hidden))


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_pixel_shuffle_shapes(backbones, tokenizer, factor):
    vision, lm = backbones
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=factor)
    patches = (32 // 8) ** 2
    out = model.model.connector(torch.randn(3, patches, 32))
    assert out.shape == (3, patches // factor**2, lm.config.hidden_size)
    assert image_seq_len(32, 8, factor) == patches // factor**2


def test_pool_init_gives_an_object_the_same_token_wherever_it_sits(backbones, tokenizer):
    vision, lm = backbones
    pooled = assemble_idefics3(vision, lm, tokenizer, scale_factor=2, connector_init="pool")
    random = assemble_idefics3(vision, lm, tokenizer, scale_factor=2)
    object_patch = torch.randn(32)
    # a 4x4 patch grid, one 2x2 token: the object in its top-left patch, then in its bottom-right
    a, b = torch.zeros(1, 16, 32), torch.zeros(1, 16, 32)
    a[0, 0], b[0, 5] = object_patch, object_patch
    assert torch.allclose(pooled.model.connector(a)[0, 0], pooled.model.connector(b)[0, 0], atol=1e-6)
    assert not torch.allclose(random.model.connector(a)[0, 0], random.model.connector(b)[0, 0], atol=1e-3)
    with pytest.raises(ValueError, match="connector_init"):
        assemble_idefics3(vision, lm, tokenizer, scale_factor=2, connector_init="zeros")


def test_scale_factor_must_divide_the_patch_grid(backbones, tokenizer):
    with pytest.raises(ValueError, match="not divisible"):
        assemble_idefics3(*backbones, tokenizer, scale_factor=3)


def test_below_the_tile_size_the_one_view_keeps_only_the_smaller_images_detail(tokenizer):
    """longest_edge 16 on a 32 px tower: one 32 px view (the same tokens), whose 1 px
    checkerboard was averaged away at 16 px; at 32 px the checkerboard survives."""
    board = Image.fromarray(((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 255)
                            .to(torch.uint8).numpy()).convert("RGB")
    def view(edge):
        proc = build_processor(tokenizer, tile_size=32, longest_edge=edge, patch_size=8, scale_factor=2)
        return proc.image_processor([board], return_tensors="pt").pixel_values[0]
    sharp, blurred = view(32), view(16)
    assert sharp.shape == blurred.shape == (1, 3, 32, 32)
    assert sharp.std() > 0.9 and blurred.std() < 0.3
    with pytest.raises(ValueError, match="must be a multiple"):
        build_processor(tokenizer, tile_size=32, longest_edge=48, patch_size=8, scale_factor=2)


def test_saved_vlm_loads_with_auto_classes_and_generates(backbones, tokenizer, tmp_path):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8, scale_factor=2)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Idefics3ForConditionalGeneration"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=[text], images=[[Image.new("RGB", (64, 64), "red")]], return_tensors="pt")
    # 2x2 tiles + a global view, 4 image tokens each
    assert int((inputs.input_ids == loaded.config.image_token_id).sum()) == 5 * 4
    out = loaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs.input_ids.shape[1]
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tokenizer.chat_template


def test_unfreezing_schedule_is_enforced(backbones, tokenizer):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    counts = apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "frozen"})
    assert counts["vision"] == 0 and counts["text"] == 0
    assert counts["connector"] == sum(p.numel() for p in model.model.connector.parameters())
    with pytest.raises(ValueError, match="schedule names"):
        apply_unfreezing(model, {"vision": "frozen"})
    with pytest.raises(ValueError, match="unknown mode"):
        apply_unfreezing(model, {"vision": "sparse", "connector": "full", "text": "full"})
