"""Batched greedy generation (the evaluation path) works for every architecture, and with
left padding gives the same answer as generating each prompt alone."""

from __future__ import annotations

import pytest

from components.evaluation.generate import generate_answers
from components.model.architectures import ARCHITECTURES
from components.model.chat import ChatEncoder
from tests.components.model.helpers import build, colour_chats


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_generation_matches_one_by_one(arch, tokenizer, tmp_path):
    _, _, model, processor = build(arch, tokenizer, tmp_path)
    encoder = ChatEncoder(processor, max_length=256)
    prompts = [(m[:1], imgs) for m, imgs in colour_chats(3)]
    prompts[1] = ([{"role": "user", "content": [{"type": "text", "text": "Is there a blue square?"}]}], [])
    batched = generate_answers(model, encoder, prompts, max_new_tokens=4, batch_size=3)
    alone = [generate_answers(model, encoder, [p], max_new_tokens=4)[0] for p in prompts]
    assert batched == alone and all(isinstance(a, str) for a in batched)
