"""Simple geometry: angles, lengths on a grid, which line is longer, polygon sides."""

from __future__ import annotations

import math
import random
from typing import Any

from PIL import Image, ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import COLOURS

SOURCE = "geometry"
KINDS = ("angle", "angle_type", "length", "compare", "sides")
SUPERSAMPLE = 2  # drawn at 2x and downsampled: anti-aliased lines
GRID_UNITS = 8
PAPER = ((255, 255, 255), (250, 248, 240), (240, 244, 250))
INK = ((0, 0, 0), (30, 30, 90), (90, 20, 20))


def _ray(cx: float, cy: float, length: float, degrees: float) -> tuple[float, float]:
    rad = math.radians(degrees)
    return cx + length * math.cos(rad), cy - length * math.sin(rad)


def draw_angle(draw: ImageDraw.ImageDraw, rng: random.Random, s: int, width: int,
               ink: tuple[int, int, int]) -> int:
    """Two rays from a common vertex; returns the angle (a multiple of 15 in 15..165)."""
    angle = 15 * rng.randint(1, 11)
    base = rng.uniform(0, 360)
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    length = 0.36 * s
    for d in (base, base + angle):
        draw.line([(cx, cy), _ray(cx, cy, length, d)], fill=ink, width=width)
    r = 0.12 * s
    draw.arc((cx - r, cy - r, cx + r, cy + r), -(base + angle), -base, fill=ink,
             width=max(1, width // 2))
    return angle


def draw_length(draw: ImageDraw.ImageDraw, rng: random.Random, s: int, width: int,
                ink: tuple[int, int, int]) -> int:
    """A light unit grid and a bold segment along one grid line; returns its length in units."""
    step = s / (GRID_UNITS + 1)
    lo, hi = step / 2, s - step / 2
    for k in range(GRID_UNITS + 1):
        p = lo + k * step
        draw.line([(p, lo), (p, hi)], fill=(200, 200, 200), width=max(1, width // 3))
        draw.line([(lo, p), (hi, p)], fill=(200, 200, 200), width=max(1, width // 3))
    n = rng.randint(1, GRID_UNITS)
    start = rng.randint(0, GRID_UNITS - n)
    line = rng.randint(0, GRID_UNITS)
    a, b, c = lo + start * step, lo + (start + n) * step, lo + line * step
    points = [(a, c), (b, c)] if rng.random() < 0.5 else [(c, a), (c, b)]
    draw.line(points, fill=ink, width=width * 2)
    return n


def draw_compare(draw: ImageDraw.ImageDraw, rng: random.Random, s: int, width: int) -> str:
    """A red and a blue segment, one at least 1.4x longer; returns the longer one's colour."""
    long_len = rng.uniform(0.55, 0.8) * s
    short_len = long_len / rng.uniform(1.4, 2.5)
    longer = rng.choice(("red", "blue"))
    for colour, ypos in zip(("red", "blue"), rng.sample((0.3, 0.7), 2), strict=True):
        length = long_len if colour == longer else short_len
        x0 = rng.uniform(0.08 * s, s - 0.08 * s - length)
        y = ypos * s + rng.uniform(-0.08, 0.08) * s
        draw.line([(x0, y), (x0 + length, y)], fill=COLOURS[colour], width=width * 2)
    return longer


def draw_polygon(draw: ImageDraw.ImageDraw, rng: random.Random, s: int) -> int:
    """A filled regular polygon with 3-8 sides at a random rotation; returns the side count."""
    k = rng.randint(3, 8)
    rot = rng.uniform(0, 360)
    r = rng.uniform(0.3, 0.42) * s
    pts = [_ray(s / 2, s / 2, r, rot + 360 * i / k) for i in range(k)]
    draw.polygon(pts, fill=COLOURS[rng.choice(tuple(COLOURS))])
    return k


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """One geometry question with an exact answer."""
    rng = sample_rng(seed, split, SOURCE, index)
    kind = KINDS[index % len(KINDS)] if split == "test" else rng.choice(KINDS)
    s = image_size * SUPERSAMPLE
    image = Image.new("RGB", (s, s), rng.choice(PAPER))
    draw = ImageDraw.Draw(image)
    width = max(2, round(s / 48))
    ink = rng.choice(INK)
    extra: dict[str, Any] = {}
    if kind in ("angle", "angle_type"):
        angle = draw_angle(draw, rng, s, width, ink)
        extra["degrees"] = angle
        if kind == "angle":
            q, a = "What is the angle between the two lines, in degrees?", str(angle)
        else:
            a = "acute" if angle < 90 else "right" if angle == 90 else "obtuse"
            q = "Is the angle acute, right or obtuse?"
    elif kind == "length":
        n = draw_length(draw, rng, s, width, ink)
        q, a = "How many grid squares long is the dark line?", str(n)
    elif kind == "compare":
        q = "Which line is longer, the red one or the blue one?"
        a = draw_compare(draw, rng, s, width)
    else:
        q, a = "How many sides does the shape have?", str(draw_polygon(draw, rng, s))
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    record = {"task": "geometry", "source": SOURCE, "kind": kind,
              "messages": [user_turn(q, 1), assistant_turn(a)], "answers": [a], **extra}
    return Sample(sample_key(SOURCE, split, index), [image], record)
