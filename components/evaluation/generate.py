"""Batched greedy generation with the KV cache, for any Idefics3-family model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from components.model.chat import ChatEncoder, collate
from components.progress import progress


@torch.no_grad()
def generate_answers(
    model,
    encoder: ChatEncoder,
    prompts: Sequence[tuple[list[dict], list[Image.Image]]],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
) -> list[str]:
    """Greedy answers for (messages, images) prompts, left-padded in batches."""
    tokenizer = encoder.tokenizer
    model.eval()
    answers: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in progress(starts, desc="generate", unit="batch"):
        chunk = prompts[start : start + batch_size]
        batch = collate([encoder.prompt(m, imgs) for m, imgs in chunk], tokenizer.pad_token_id, "left")
        batch.pop("labels")
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers
