"""Tiny backbones per architecture, saved and reloaded the way users load real ones."""

from __future__ import annotations

import torch
from PIL import Image

from components.model.architectures import spec
from components.model.backbones import load_text_backbone, load_vision_backbone
from components.model.build import assemble, processor_for
from components.model.spec import ARCHITECTURE_OPTIONS, ModelSpec

SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
CLIP = dict(SIGLIP, model_type="clip_vision_model")
LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
          num_key_value_heads=2, initializer_range=0.2)  # a head able to commit, like a trained LM
CLASSES = {"idefics3": "Idefics3ForConditionalGeneration", "llava": "LlavaForConditionalGeneration",
           "idefics2": "Idefics2ForConditionalGeneration", "idefics": "IdeficsForVisionText2Text"}
OPTIONS = dict(scale_factor=2, resampler_latents=4, resampler_depth=1, resampler_heads=2)
# a schedule per architecture that trains every new layer and LoRA on the LM
SCHEDULES = {
    "idefics3": {"vision": "frozen", "connector": "full", "text": "lora"},
    "llava": {"vision": "frozen", "connector": "full", "text": "lora"},
    "idefics2": {"vision": "frozen", "connector": "full", "text": "lora"},
    "idefics": {"vision": "frozen", "connector": "full", "cross_attn": "full", "text": "frozen"},
}


def saved_backbones(arch: str, vocab_size: int, tmp_path):
    """Build, save_pretrained and reload through load_*_backbone (the users' path)."""
    torch.manual_seed(0)
    vision = load_vision_backbone(CLIP if arch == "idefics" else SIGLIP)
    lm = load_text_backbone(LM, vocab_size=vocab_size)
    vision.save_pretrained(tmp_path / "vision")
    lm.save_pretrained(tmp_path / "lm")
    return load_vision_backbone(tmp_path / "vision"), load_text_backbone(tmp_path / "lm")


def model_spec(arch: str, **fields) -> ModelSpec:
    """A model section for ``arch`` with the micro options it reads (OPTIONS, then ``fields``);
    fields that are no architecture's option (``vision``, ``text``, ...) as given."""
    read = spec(arch).options
    return ModelSpec(architecture=arch, **{k: v for k, v in {**OPTIONS, **fields}.items()
                                           if k in read or k not in ARCHITECTURE_OPTIONS})


def build(arch: str, tokenizer, tmp_path, longest_edge: int = 32):
    vision, lm = saved_backbones(arch, len(tokenizer), tmp_path)
    model = assemble(model_spec(arch), vision, lm, tokenizer, seed=0)
    return vision, lm, model, processor_for(model, tokenizer, longest_edge)


COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def colour_chats(n: int = 4):
    """(messages, images): 'What colour is the circle?' -> the image's colour."""
    out = []
    for i in range(n):
        name = list(COLOURS)[i % 2]
        messages = [
            {"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "What colour is the circle?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": name}]}]
        out.append((messages, [Image.new("RGB", (32, 32), COLOURS[name])]))
    return out


def colour_batch(processor, n: int = 4) -> dict:
    """The colour chats encoded and collated for ``processor``'s model."""
    from components.model.chat import ChatEncoder, collate

    encoder = ChatEncoder(processor, max_length=256)
    items = [encoder.encode(m, imgs) for m, imgs in colour_chats(n)]
    assert all(it is not None for it in items)
    return collate(items, processor.tokenizer.pad_token_id)


def fit(model, batch: dict, steps: int, lr: float = 3e-2) -> list[float]:
    """AdamW on the trainable parameters, the same batch `steps` times; the losses."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses
