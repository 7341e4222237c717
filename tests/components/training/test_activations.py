"""Gradient checkpointing recomputes the vision tower's and the LM's layers in backward and
changes nothing else: the same loss and the same gradients, full or LoRA."""

from __future__ import annotations

import pytest
import torch

from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.freeze import apply_unfreezing
from components.training.activations import activation_checkpointing
from tests.components.model.helpers import colour_batch

SCHEDULES = {"full": {"vision": "full", "connector": "full", "text": "full"},
             "lora": {"vision": "lora", "connector": "full", "text": "lora"}}


def loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def counted(forward, module, side: str, calls: dict):
    """``forward`` counting the calls of ``module`` (hooks do not see a checkpoint's recompute)."""
    def wrapper(self, *args, **kwargs):
        calls[side] += self is module
        return forward(self, *args, **kwargs)
    return wrapper


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_checkpointing_gives_the_same_loss_and_gradients(backbones, tokenizer, schedule, monkeypatch):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    apply_unfreezing(model, SCHEDULES[schedule], lora_rank=4)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    batch = colour_batch(processor)
    model.train()
    plain_loss, plain = loss_and_grads(model, batch)

    calls = {"vision": 0, "text": 0}
    for side, mlp in (("vision", model.model.vision_model.encoder.layers[0].mlp),
                      ("text", model.model.text_model.layers[0].mlp)):
        monkeypatch.setattr(type(mlp), "forward", counted(type(mlp).forward, mlp, side, calls))
    with activation_checkpointing(model):
        ckpt_loss, ckpt = loss_and_grads(model, batch)
    assert calls == {"vision": 2, "text": 2}  # a layer's MLP: forward, then again in backward
    calls.update(vision=0, text=0)
    loss_and_grads(model, batch)  # off again after the block
    assert calls == {"vision": 1, "text": 1}

    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-6)
    assert set(ckpt) == set(plain) and plain
    for name, grad in plain.items():
        assert torch.allclose(ckpt[name], grad, atol=1e-6, rtol=1e-5), name
