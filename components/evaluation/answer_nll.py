"""Teacher-forced likelihood of reference answers: a score that moves while exact match
still reads zero (the tiny recipe answers no text-only instruction right, yet SFT's
text-only share changes how likely it finds the right answers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.sample import Sample
from components.evaluation.synthetic_suite import prompt_messages
from components.model.chat import ChatEncoder, collate
from components.model.logps import labelled_tokens, model_sequence_logps


@torch.no_grad()
def answer_nll(model, encoder: ChatEncoder, samples: Sequence[Sample], *,
               batch_size: int = 32) -> float | None:
    """Mean over ``samples`` of the negative log-likelihood per token of each sample's first
    reference answer (and its end of utterance) after its prompt; None when none fits the
    encoder's max_length."""
    items = [encoder.encode_with_answer(prompt_messages(s.record), s.images, s.record["answers"][0])
             for s in samples]
    items = [it for it in items if it is not None]
    if not items:
        return None
    per_sample: list[float] = []
    for i in range(0, len(items), batch_size):
        batch = collate(items[i : i + batch_size], encoder.tokenizer.pad_token_id)
        labels = batch.pop("labels")
        logps = model_sequence_logps(model, batch, labels)
        per_sample += (-logps / labelled_tokens(labels).clamp(min=1)).tolist()
    return sum(per_sample) / len(per_sample)


def text_answer_nll(model, encoder: ChatEncoder, samples: Sequence[Sample], *,
                    batch_size: int = 32) -> dict[str, float]:
    """``{"text_answer_nll": ...}`` over the text-only samples (task ``text``) of a synthetic
    suite; empty when it has none that fit."""
    nll = answer_nll(model, encoder, [s for s in samples if s.record.get("task") == "text"],
                     batch_size=batch_size)
    return {} if nll is None else {"text_answer_nll": nll}
