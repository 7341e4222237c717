"""The answer likelihood: computed independently, one unpadded item at a time, and it falls
when the model is trained on those answers."""

from __future__ import annotations

import pytest
import torch

from components.data.sample import Sample
from components.evaluation.answer_nll import answer_nll
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import ChatEncoder, collate

QUESTIONS = [("What is 2 + 3?", "5"), ("Repeat: red circle", "red circle"),
             ("Which is larger, 68 or 1?", "68"), ("Reverse: ab", "ba")]


def _samples():
    return [Sample(f"text-{i}", [], {"task": "text", "answers": [a], "messages": [
        {"role": "user", "content": [{"type": "text", "text": q}]},
        {"role": "assistant", "content": [{"type": "text", "text": a}]}]})
        for i, (q, a) in enumerate(QUESTIONS)]


def _encoder_and_model(backbones, tokenizer):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return model, ChatEncoder(processor, max_length=512)


def test_the_batched_mean_matches_one_item_at_a_time(backbones, tokenizer):
    model, encoder = _encoder_and_model(backbones, tokenizer)
    samples = _samples()
    expected = []
    for s in samples:
        item = encoder.encode_with_answer(s.record["messages"][:1], [], s.record["answers"][0])
        logits = model(input_ids=torch.tensor([item.input_ids])).logits[0, :-1].log_softmax(-1)
        targets = torch.tensor(item.input_ids[1:])
        mask = torch.tensor(item.labels[1:]) != -100
        expected.append(-logits[mask].gather(1, targets[mask, None]).mean().item())
    got = answer_nll(model, encoder, samples, batch_size=3)  # padded batches of 3 and 1
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_training_on_the_answers_lowers_it(backbones, tokenizer):
    model, encoder = _encoder_and_model(backbones, tokenizer)
    samples = _samples()
    before = answer_nll(model, encoder, samples)
    batch = collate([encoder.encode(s.record["messages"], []) for s in samples],
                    tokenizer.pad_token_id)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        optimiser.zero_grad()
        model(**batch).loss.backward()
        optimiser.step()
    model.eval()
    assert answer_nll(model, encoder, samples) < before - 0.5


def test_nothing_to_score_is_none(backbones, tokenizer):
    model, encoder = _encoder_and_model(backbones, tokenizer)
    assert answer_nll(model, ChatEncoder(encoder.processor, max_length=4), _samples()) is None
