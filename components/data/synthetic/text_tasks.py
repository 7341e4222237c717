"""Text-only instructions with exact answers: arithmetic, reversal, successor, comparison, repeat."""

from __future__ import annotations

import random

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "text"
KINDS: tuple[str, ...] = ("arithmetic", "reverse", "successor", "compare", "repeat")


def instruction(rng: random.Random, kind: str) -> tuple[str, str]:
    """A (question, answer) pair of the given kind."""
    if kind == "arithmetic":
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            return f"What is {a} + {b}?", str(a + b)
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", str(a - b)
    if kind == "reverse":
        word = rng.choice(WORDS)
        return f"Reverse the word {word}.", word[::-1]
    if kind == "successor":
        n = rng.randint(0, 98)
        return f"What comes after {n}?", str(n + 1)
    if kind == "compare":
        a, b = rng.sample(range(100), 2)
        return f"Which is larger, {a} or {b}?", str(max(a, b))
    if kind == "repeat":
        phrase = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        return f"Repeat: {phrase}", phrase
    raise ValueError(f"unknown text task kind {kind!r}; expected one of {list(KINDS)}")


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """One single-turn text-only instruction; ``image_size`` is unused."""
    rng = sample_rng(seed, split, SOURCE, index)
    kind = rng.choice(KINDS)
    question, answer = instruction(rng, kind)
    record = {
        "task": "text",
        "source": SOURCE,
        "messages": [user_turn(question), assistant_turn(answer)],
        "kind": kind,
        "answers": [answer],
    }
    return Sample(sample_key(SOURCE, split, index), [], record)
