"""Scene VQA on size and spatial relations: small/large shapes in a 3x3 layout.

Objects sit in distinct cells of a 3x3 grid, so "left of" (different columns) and
"above" (different rows) are unambiguous; sizes are clearly small or large.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from PIL import ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.drawing import CELLS, cell_box, draw_shape, noisy_canvas
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import BACKGROUNDS, COLOURS, SHAPES

SOURCE = "scenes_relations"
QTYPES = ("size", "size_compare", "left_right", "above_below")
SIZES = {"small": (0.13, 0.18), "large": (0.26, 0.31)}


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str
    cell: int

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def col(self) -> int:
        return self.cell % 3

    def as_dict(self) -> dict[str, Any]:
        return {"colour": self.colour, "shape": self.shape, "size": self.size,
                "cell": CELLS[self.cell]}


def sample_things(rng: random.Random, lo: int = 2, hi: int = 4) -> list[Thing]:
    """``lo``..``hi`` objects with distinct (colour, shape) in distinct cells."""
    n = rng.randint(lo, hi)
    combos = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    cells = sorted(rng.sample(range(9), n))
    return [Thing(c, s, rng.choice(tuple(SIZES)), cell)
            for (c, s), cell in zip(combos, cells, strict=True)]


def render_things(things: list[Thing], rng: random.Random, image_size: int):
    """Draw the objects on a lightly noisy background."""
    image = noisy_canvas(rng, rng.choice(BACKGROUNDS), image_size, image_size)
    draw = ImageDraw.Draw(image)
    for t in things:
        side = max(3, round(rng.uniform(*SIZES[t.size]) * image_size))
        draw_shape(draw, t.shape, cell_box(rng, t.cell, 3, image_size, side), COLOURS[t.colour])
    return image


def ask(things: list[Thing], rng: random.Random, qtype: str) -> tuple[str, str, str]:
    """(qtype, question, answer) of ``qtype``, or of another type when no pair of objects
    allows it; answers are lower case, no punctuation."""
    if qtype == "size":
        t = rng.choice(things)
        return qtype, f"Is the {t.phrase} small or large?", t.size
    pairs = [(a, b) for a in things for b in things if a is not b]
    if qtype == "size_compare":
        pairs = [(a, b) for a, b in pairs if a.size != b.size]
        if not pairs:
            return ask(things, rng, "size")
        a, b = rng.choice(pairs)
        big = a if a.size == "large" else b
        return qtype, f"Which is larger, the {a.phrase} or the {b.phrase}?", big.phrase
    if qtype == "left_right":
        pairs = [(a, b) for a, b in pairs if a.col != b.col]
        if not pairs:
            return ask(things, rng, "above_below")
        a, b = rng.choice(pairs)
        side = rng.choice(("left", "right"))
        truth = a.col < b.col if side == "left" else a.col > b.col
        question = f"Is the {a.phrase} to the {side} of the {b.phrase}?"
        return qtype, question, "yes" if truth else "no"
    if qtype == "above_below":
        pairs = [(a, b) for a, b in pairs if a.row != b.row]
        if not pairs:
            return ask(things, rng, "left_right")
        a, b = rng.choice(pairs)
        where = rng.choice(("above", "below"))
        truth = a.row < b.row if where == "above" else a.row > b.row
        return qtype, f"Is the {a.phrase} {where} the {b.phrase}?", "yes" if truth else "no"
    raise ValueError(f"unknown relation question type {qtype!r}; expected one of {QTYPES}")


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """1-3 turns of size / relation questions about one image (test: one turn)."""
    rng = sample_rng(seed, split, SOURCE, index)
    things = sample_things(rng)
    image = render_things(things, rng, image_size)
    n_turns = 1 if split == "test" else rng.randint(1, 3)
    messages: list[dict[str, Any]] = []
    qtypes: list[str] = []
    seen: set[str] = set()
    while len(qtypes) < n_turns:
        qtype = QTYPES[index % len(QTYPES)] if split == "test" else rng.choice(QTYPES)
        qtype, question, answer = ask(things, rng, qtype)
        if question in seen:
            continue
        seen.add(question)
        messages += [user_turn(question, 0 if messages else 1), assistant_turn(answer)]
        qtypes.append(qtype)
    record = {"task": "vqa", "source": SOURCE, "messages": messages,
              "objects": [t.as_dict() for t in things], "qtypes": qtypes,
              "answers": [answer]}
    if n_turns == 1:
        record["qtype"] = qtypes[0]
    return Sample(sample_key(SOURCE, split, index), [image], record)
