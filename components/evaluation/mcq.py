"""Multiple-choice answers from a model's letter log-probabilities: one forward pass per
batch, no generation."""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from components.evaluation.official_formats import MCQItem, letter
from components.model.chat import ChatEncoder, collate

__all__ = ["INSTRUCTION", "LetterScores", "choose_options", "item_images", "letter_token_ids",
           "mcq_messages"]

INSTRUCTION = "Answer with the option's letter."


@dataclass(frozen=True)
class LetterScores:
    """The chosen letter of one item and each option letter's log-probability."""

    id: Hashable
    letter: str
    logprobs: dict[str, float]


def mcq_messages(item: MCQItem) -> list[dict]:
    """User turn: image placeholder (if any), question, lettered options, instruction."""
    lines = [item.question, *(f"{letter(i)}. {o}" for i, o in enumerate(item.options)), INSTRUCTION]
    content = [{"type": "image"}] if item.image else []
    content.append({"type": "text", "text": "\n".join(lines)})
    return [{"role": "user", "content": content}]


def letter_token_ids(tokenizer, n: int) -> list[int]:
    """Token id of each of the first ``n`` letters; each must be a single token."""
    ids = []
    for i in range(n):
        tokens = tokenizer(letter(i), add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise ValueError(f"option letter {letter(i)!r} is {len(tokens)} tokens, not one: "
                             "letter scoring needs single-token letters")
        ids.append(tokens[0])
    return ids


def item_images(item: MCQItem) -> list[Image.Image]:
    """The item's image (a file or encoded bytes) as RGB, or none."""
    if not item.image:
        return []
    source = io.BytesIO(item.image) if isinstance(item.image, bytes) else item.image
    shown = "<encoded image>" if isinstance(item.image, bytes) else repr(item.image)
    try:
        with Image.open(source) as img:
            return [img.convert("RGB")]
    except OSError as exc:
        raise ValueError(f"item {item.id!r}: cannot open image {shown} ({exc})") from exc


@torch.no_grad()
def choose_options(model, encoder: ChatEncoder, items: Sequence[MCQItem], *,
                   batch_size: int = 16) -> list[LetterScores]:
    """Pick each item's option by the log-probability of its letter as the answer's first token.

    Prompts are left-padded, with position ids counted from each prompt's first real token,
    so a batched item scores as it would alone.
    """
    if not items:
        return []
    n_max = max(len(it.options) for it in items)
    letter_ids = torch.tensor(letter_token_ids(encoder.tokenizer, n_max))
    model.eval()
    out: list[LetterScores] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = collate([encoder.prompt(mcq_messages(it), item_images(it)) for it in chunk],
                        encoder.tokenizer.pad_token_id, "left")
        batch.pop("labels")
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = model(**batch, position_ids=positions, logits_to_keep=1).logits[:, -1]
        letter_lp = logits.float().log_softmax(-1)[:, letter_ids]
        for item, row in zip(chunk, letter_lp, strict=True):
            scores = row[: len(item.options)]
            out.append(LetterScores(item.id, letter(int(scores.argmax())),
                                    {letter(i): float(s) for i, s in enumerate(scores)}))
    return out
