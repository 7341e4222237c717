"""Spot the difference: two renderings of one 3x3 scene that differ in exactly one object."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.drawing import CELLS, cell_box, draw_shape, noisy_canvas
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import BACKGROUNDS, COLOURS, SHAPES, indefinite

SOURCE = "spot_difference"
CHANGES = ("colour", "shape", "removed", "added")
PROMPT = "What is different in the second image?"

Obj = tuple[str, str, int]  # colour, shape, cell


def change(objs: list[Obj], rng: random.Random) -> tuple[str, list[Obj], str]:
    """(kind, changed objects, answer) for one random change."""
    kind = rng.choice(CHANGES)
    i = rng.randrange(len(objs))
    colour, shape, cell = objs[i]
    where = CELLS[cell]
    new = list(objs)
    if kind == "colour":
        other = rng.choice([c for c in COLOURS if c != colour])
        new[i] = (other, shape, cell)
        return kind, new, f"the {colour} {shape} at the {where} became {other}"
    if kind == "shape":
        other = rng.choice([s for s in SHAPES if s != shape])
        new[i] = (colour, other, cell)
        return kind, new, f"the {colour} {shape} at the {where} became a {other}"
    if kind == "removed" and len(objs) > 1:
        del new[i]
        return kind, new, f"the {colour} {shape} at the {where} is missing"
    free = [c for c in range(9) if all(o[2] != c for o in objs)]
    cell = rng.choice(free)
    colour, shape = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
    new.append((colour, shape, cell))
    return "added", new, f"{indefinite(colour + ' ' + shape)} was added at the {CELLS[cell]}"


def render(objs: list[Obj], base: Image.Image, sides: dict[int, int], rng_seed: int,
           image_size: int) -> Image.Image:
    """Objects drawn on a copy of ``base``; a cell's box depends only on the cell and seed."""
    image = base.copy()
    draw = ImageDraw.Draw(image)
    for colour, shape, cell in objs:
        box = cell_box(random.Random(rng_seed * 31 + cell), cell, 3, image_size, sides[cell])
        draw_shape(draw, shape, box, COLOURS[colour])
    return image


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """Two images, one question: which object changed, was removed or was added (and where)."""
    rng = sample_rng(seed, split, SOURCE, index)
    n = rng.randint(2, 5)
    cells = rng.sample(range(9), n)
    objs = [(rng.choice(tuple(COLOURS)), rng.choice(SHAPES), c) for c in cells]
    kind, changed, answer = change(objs, rng)
    sides = {c: max(3, round(rng.uniform(0.2, 0.3) * image_size)) for c in range(9)}
    base = noisy_canvas(rng, rng.choice(BACKGROUNDS), image_size, image_size)
    layout_seed = rng.getrandbits(32)
    first = render(objs, base, sides, layout_seed, image_size)
    second = render(changed, base, sides, layout_seed, image_size)
    record: dict[str, Any] = {
        "task": "spot_difference", "source": SOURCE, "change": kind,
        "messages": [user_turn(PROMPT, 2), assistant_turn(answer)], "answers": [answer],
        "objects": [{"colour": c, "shape": s, "cell": CELLS[k]} for c, s, k in objs],
    }
    return Sample(sample_key(SOURCE, split, index), [first, second], record)
