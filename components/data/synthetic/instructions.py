"""Text-only instructions with exact answers: arithmetic, string and list tasks, and short
multi-turn chats whose last answer depends on an earlier turn."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "instructions"
NAMES = ("Ada", "Ben", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jade")


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(0, 50)
    return rng.choice((
        (f"What is {a} times {b}?", str(a * b)),
        (f"Compute {a} * {b} + {c}.", str(a * b + c)),
        (f"What is {a * b} divided by {b}?", str(a)),
        (f"What is {c} + {a} - {b}?", str(c + a - b)),
    ))


def _string(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    letter = rng.choice(word)
    return rng.choice((
        (f"Write {word} in capital letters.", word.upper()),
        (f"How many letters does the word {word} have?", str(len(word))),
        (f'How many times does the letter "{letter}" appear in {word}?', str(word.count(letter))),
        (f"What is the first letter of {word}?", word[0]),
        (f"What is the last letter of {word}?", word[-1]),
        (f"Sort the letters of {word} alphabetically.", "".join(sorted(word))),
    ))


def _list(rng: random.Random) -> tuple[str, str]:
    nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
    words = rng.sample(WORDS, rng.randint(3, 5))
    shown, listed = ", ".join(map(str, nums)), ", ".join(words)
    return rng.choice((
        (f"Sort these numbers from smallest to largest: {shown}.",
         ", ".join(map(str, sorted(nums)))),
        (f"What is the largest number in {shown}?", str(max(nums))),
        (f"What is the sum of {shown}?", str(sum(nums))),
        (f"How many items are in this list: {listed}?", str(len(words))),
        (f"Put these words in alphabetical order: {listed}.", ", ".join(sorted(words))),
        (f"Reverse the order of this list: {listed}.", ", ".join(reversed(words))),
    ))


def _chat(rng: random.Random) -> list[tuple[str, str]]:
    """2-3 turns; the last answer needs an earlier turn."""
    name, n, word = rng.choice(NAMES), rng.randint(2, 20), rng.choice(WORDS)
    kind = rng.choice(("name", "number", "word"))
    if kind == "name":
        return [(f"Hi, my name is {name}.", f"Nice to meet you, {name}. How can I help?"),
                ("What is my name?", name)]
    if kind == "number":
        return [(f"Remember the number {n}.", f"Okay, I will remember {n}."),
                ("Now add 5 to it.", str(n + 5)),
                ("And what was the number I asked you to remember?", str(n))]
    return [(f"My favourite word is {word}.", f"{word.title()} is a good word."),
            ("Spell my favourite word backwards.", word[::-1])]


SINGLE: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arithmetic": _arithmetic, "string": _string, "list": _list,
}
KINDS = (*SINGLE, "chat")


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """One text-only instruction (or short chat); ``image_size`` is unused."""
    rng = sample_rng(seed, split, SOURCE, index)
    kind = KINDS[index % len(KINDS)] if split == "test" else rng.choice(KINDS)
    turns = _chat(rng) if kind == "chat" else [SINGLE[kind](rng)]
    messages: list[dict[str, Any]] = []
    for question, answer in turns:
        messages += [user_turn(question), assistant_turn(answer)]
    record = {"task": "text", "source": SOURCE, "kind": kind, "messages": messages,
              "answers": [turns[-1][1]]}
    return Sample(sample_key(SOURCE, split, index), [], record)
