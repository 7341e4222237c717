"""Validation during training: the objective's loss on fixed val batches and a small
generative eval (exact match of the first answer of val conversations)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice, zip_longest
from pathlib import Path

import torch
from torch import nn

from components.data.sample import Sample
from components.data.shards import read_samples, shard_paths
from components.evaluation.exact_match import exact_match
from components.evaluation.generate import generate_answers
from components.model.chat import ChatEncoder
from components.training.data_stream import ChatBatches, PreferenceBatches


def first_question(sample: Sample) -> tuple[list[dict], list, list[str]]:
    """(prompt messages, images, reference answers) of a sample's first exchange."""
    rec = sample.record
    if "chosen" in rec:  # a preference pair: its prompt, the chosen answer
        return rec["messages"], sample.images, [rec["chosen"]]
    user, answer = rec["messages"][0], rec["messages"][1]
    text = "".join(p.get("text", "") for p in answer["content"]) if isinstance(
        answer["content"], list) else answer["content"]
    return [user], sample.images, [text]


class ValidationProbe:
    """Called by the loop every `eval_every` steps with the model; returns `val_loss` (plus
    the objective's other metrics, `val_` prefixed) and `val_answer_accuracy`."""

    def __init__(self, batches: Sequence[dict], objective, encoder: ChatEncoder,
                 questions: Sequence[tuple[list[dict], list, list[str]]], max_new_tokens: int = 16):
        self.batches, self.objective, self.encoder = list(batches), objective, encoder
        self.questions, self.max_new_tokens = list(questions), max_new_tokens

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        device = next(model.parameters()).device
        model.eval()
        out: dict[str, float] = {}
        try:
            for batch in self.batches:  # the objective's loss and metrics (DPO rewards), averaged
                loss, metrics = self.objective(model, {k: v.to(device) for k, v in batch.items()})
                for k, v in {"loss": float(loss), **metrics}.items():
                    out[f"val_{k}"] = out.get(f"val_{k}", 0.0) + float(v) / len(self.batches)
            if self.questions:
                prompts = [(m, imgs) for m, imgs, _ in self.questions]
                preds = generate_answers(model, self.encoder, prompts,
                                         max_new_tokens=self.max_new_tokens, batch_size=len(prompts))
                scores = [exact_match(p, refs)
                          for p, (_, _, refs) in zip(preds, self.questions, strict=True)]
                out["val_answer_accuracy"] = sum(scores) / len(scores)
        finally:
            model.train(was_training)
        return out


def validation_probe(shards: Path, sources: list[str], kind: str, encoder: ChatEncoder, objective,
                     batch_size: int, *, batches: int = 2, questions: int = 32) -> ValidationProbe:
    """A probe over the first `batches` val batches of the stage's sources (interleaved in
    source order, fixed) and the first answers of `questions` val samples. Sources without val
    shards are left out; none at all is an error."""
    with_val = [s for s in sources if any((Path(shards) / "val").glob(f"{s}-*.tar"))]
    if not with_val:
        raise FileNotFoundError(f"no val shards for any of {sources} in {shards}: eval_every needs them")
    per_source = [list(islice(read_samples(shard_paths(shards, "val", [s])), batches * batch_size))
                  for s in with_val]
    samples = [s for group in zip_longest(*per_source) for s in group if s is not None]
    maker = PreferenceBatches if kind == "align" else ChatBatches
    fixed = list(islice(iter(maker(samples, encoder, batch_size)), batches))
    if not fixed:
        raise ValueError(f"no val batch fits max_length for sources {with_val}")
    return ValidationProbe(fixed, objective, encoder, [first_question(s) for s in samples[:questions]])
