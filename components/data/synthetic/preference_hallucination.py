"""Preference pairs against hallucination: the faithful answer is chosen, one with a
hallucinated object, a wrong attribute (colour or size) or a wrong count is rejected."""

from __future__ import annotations

import random
from typing import Any

from components.data.sample import Sample, user_turn
from components.data.synthetic import counting
from components.data.synthetic.drawing import CELLS
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import COLOURS, SHAPES, indefinite
from components.data.synthetic.scenes_relations import SIZES, Thing, render_things, sample_things

SOURCE = "preference_hallucination"
KINDS = ("object", "attribute", "count")
PROMPTS = ("Describe the image.", "Describe every shape in the image.",
           "What is in this picture?")
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def describe(things: list[Thing]) -> str:
    """Every object with size, colour, shape and cell, in cell order."""
    parts = [f"{indefinite(f'{t.size} {t.phrase}')} at the {CELLS[t.cell]}"
             for t in sorted(things, key=lambda t: t.cell)]
    return (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]) + "."


def hallucinated_object(things: list[Thing], rng: random.Random) -> list[Thing]:
    """The objects plus one absent (colour, shape) in a free cell."""
    present = {(t.colour, t.shape) for t in things}
    colour, shape = rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])
    cell = rng.choice([c for c in range(9) if all(t.cell != c for t in things)])
    return [*things, Thing(colour, shape, rng.choice(tuple(SIZES)), cell)]


def wrong_attribute(things: list[Thing], rng: random.Random) -> tuple[str, list[Thing]]:
    """One object's colour (to an unused colour for its shape) or size flipped."""
    i = rng.randrange(len(things))
    t = things[i]
    out = list(things)
    if rng.random() < 0.5:
        used = {x.colour for x in things if x.shape == t.shape}
        out[i] = Thing(rng.choice([c for c in COLOURS if c not in used]), t.shape, t.size, t.cell)
        return "colour", out
    out[i] = Thing(t.colour, t.shape, "small" if t.size == "large" else "large", t.cell)
    return "size", out


def count_sentence(n: int, colour: str, shape: str) -> str:
    if n == 1:
        return f"There is one {colour} {shape}."
    return f"There are {NUMBERS[n]} {colour} {shape}s."


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """A prompt with ``chosen`` (faithful) and ``rejected`` (one hallucination) answers."""
    rng = sample_rng(seed, split, SOURCE, index)
    kind = rng.choice(KINDS)
    extra: dict[str, Any] = {}
    if kind == "count":
        target, objects = counting.sample_objects(rng)
        image = counting.render(objects, rng, image_size)
        n = sum((c, s) == target for c, s, _ in objects)
        wrong = rng.choice([k for k in (n - 2, n - 1, n + 1, n + 2) if 0 <= k < len(NUMBERS)])
        prompt = f"How many {target[0]} {target[1]}s are there?"
        chosen, rejected = count_sentence(n, *target), count_sentence(wrong, *target)
        extra["objects"] = [{"colour": c, "shape": s} for c, s, _ in objects]
    else:
        things = sample_things(rng, 1, 3)
        image = render_things(things, rng, image_size)
        prompt, chosen = rng.choice(PROMPTS), describe(things)
        if kind == "object":
            rejected = describe(hallucinated_object(things, rng))
        else:
            extra["attribute"], wrong_things = wrong_attribute(things, rng)
            rejected = describe(wrong_things)
        extra["objects"] = [t.as_dict() for t in things]
    record = {"task": "preference", "source": SOURCE, "messages": [user_turn(prompt, 1)],
              "chosen": chosen, "rejected": rejected, "answers": [chosen],
              "hallucination": kind, **extra}
    return Sample(sample_key(SOURCE, split, index), [image], record)
