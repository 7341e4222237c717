"""Counting: 0-9 target shapes among distractors of any other colour and shape."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.drawing import cell_box, draw_shape, noisy_canvas
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import BACKGROUNDS, COLOURS, SHAPES

SOURCE = "counting"
GRID = 4  # objects sit in distinct cells of a GRID x GRID layout, so none overlap
MAX_TARGETS = 9


def sample_objects(rng: random.Random) -> tuple[tuple[str, str], list[tuple[str, str, int]]]:
    """A target (colour, shape) and the objects as (colour, shape, cell)."""
    target = (rng.choice(tuple(COLOURS)), rng.choice(SHAPES))
    n_target = rng.randint(0, MAX_TARGETS)
    n_other = rng.randint(0 if n_target else 1, min(6, GRID * GRID - n_target))
    others = [(c, s) for c in COLOURS for s in SHAPES if (c, s) != target]
    kinds = [target] * n_target + [rng.choice(others) for _ in range(n_other)]
    cells = rng.sample(range(GRID * GRID), len(kinds))
    return target, [(c, s, cell) for (c, s), cell in zip(kinds, cells, strict=True)]


def render(objects: list[tuple[str, str, int]], rng: random.Random, image_size: int) -> Image.Image:
    image = noisy_canvas(rng, rng.choice(BACKGROUNDS), image_size, image_size)
    draw = ImageDraw.Draw(image)
    step = image_size / GRID
    for colour, shape, cell in objects:
        side = max(3, round(rng.uniform(0.55, 0.85) * step))
        draw_shape(draw, shape, cell_box(rng, cell, GRID, image_size, side), COLOURS[colour])
    return image


def question(
    target: tuple[str, str], objects: list[tuple[str, str, int]], rng: random.Random
) -> tuple[str, str, str]:
    """(kind, question, answer): the target kind (60 %), one shape (20 %) or all (20 %)."""
    u = rng.random()
    if u < 0.6:
        n = sum((c, s) == target for c, s, _ in objects)
        return "colour_shape", f"How many {target[0]} {target[1]}s are there?", str(n)
    if u < 0.8:
        shape = rng.choice(SHAPES)
        return "shape", f"How many {shape}s are there?", str(sum(s == shape for _, s, _ in objects))
    return "total", "How many shapes are there in total?", str(len(objects))


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """"How many red circles are there?" -> "3"."""
    rng = sample_rng(seed, split, SOURCE, index)
    target, objects = sample_objects(rng)
    image = render(objects, rng, image_size)
    kind, q, a = question(target, objects, rng)
    record: dict[str, Any] = {
        "task": "counting", "source": SOURCE,
        "messages": [user_turn(q, 1), assistant_turn(a)], "answers": [a], "kind": kind,
        "objects": [{"colour": c, "shape": s} for c, s, _ in objects],
    }
    return Sample(sample_key(SOURCE, split, index), [image], record)
