"""The accelerate loop trains a real VLM (loss falls), honours freezing, logs metrics."""

from __future__ import annotations

import torch
from PIL import Image

from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import ChatEncoder, collate
from components.model.freeze import apply_unfreezing
from components.recipe import TrainSettings
from components.training.loop import train


def _batch(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    encoder = ChatEncoder(processor, max_length=128)
    items = []
    for colour in ("red", "blue"):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": colour}]}]
        items.append(encoder.encode(messages, [Image.new("RGB", (32, 32), colour)]))
    return collate(items, tokenizer.pad_token_id)


def test_loss_falls_and_frozen_groups_stay_fixed(backbones, tokenizer):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "full"})
    vision_before = {k: v.clone() for k, v in model.model.vision_model.state_dict().items()}
    logged = []
    result = train(model, [_batch(tokenizer)], TrainSettings(steps=40, lr=1e-2, warmup_steps=2, log_every=5),
                   on_log=lambda step, row: logged.append((step, row)))
    assert result.steps == 40 and result.samples == 80
    assert result.mean_loss(first=False) < 0.5 * result.mean_loss(first=True)
    assert [s for s, _ in logged] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {"loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"} <= set(logged[0][1])
    for k, v in model.model.vision_model.state_dict().items():
        assert torch.equal(v, vision_before[k]), k
