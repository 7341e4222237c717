"""Drawing helpers shared by the newer generator families: canvases, shapes, grid layouts, text."""

from __future__ import annotations

import functools
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from components.data.synthetic.fonts import available_fonts, load_font
from components.data.synthetic.rng import numpy_rng

# 3x3 cell names, row-major, used by layouts that need more than four positions
CELLS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
    "bottom right",
)


def noisy_canvas(
    rng: random.Random, colour: tuple[int, int, int], width: int, height: int, sigma: float = 3.0
) -> Image.Image:
    """A flat RGB canvas with light Gaussian noise."""
    noise = numpy_rng(rng).normal(0.0, sigma, (height, width, 3))
    pixels = np.clip(np.asarray(colour, dtype=np.float64) + noise, 0, 255)
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]
) -> None:
    """A filled square, circle or (upward) triangle inside ``box`` (x0, y0, x1, y1 inclusive)."""
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def cell_box(
    rng: random.Random, cell: int, grid: int, size: int, side: int
) -> tuple[int, int, int, int]:
    """A ``side``-pixel box at random in cell ``cell`` of a ``grid`` x ``grid`` layout."""
    step = size / grid
    slack = max(0, int(step) - side - 1)
    x0 = int((cell % grid) * step) + (rng.randint(0, slack) if slack else 0)
    y0 = int((cell // grid) * step) + (rng.randint(0, slack) if slack else 0)
    return (x0, y0, x0 + side - 1, y0 + side - 1)


@functools.cache
def family_fonts() -> dict[str, str]:
    """One regular font path per style (``sans``, ``serif``, ``mono``), falling back to any."""
    fonts = available_fonts()
    wanted = {"sans": "DejaVuSans.ttf", "serif": "DejaVuSerif.ttf", "mono": "DejaVuSansMono.ttf"}
    by_name = {os.path.basename(p): p for p in fonts}
    return {style: by_name.get(name, fonts[0]) for style, name in wanted.items()}


def ui_font(size: int, style: str = "sans") -> ImageFont.FreeTypeFont:
    """A regular DejaVu font (sans, serif or mono) at a pixel size."""
    return load_font(family_fonts()[style], max(4, int(size)))


_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))


def text_size(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    """Advance width and ink height of one line of text."""
    x0, y0, x1, y1 = _MEASURE.textbbox((0, 0), text, font=font)
    return int(round(x1 - x0)), int(round(y1 - y0))


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def sentence(rng: random.Random, words: tuple[str, ...], lo: int = 5, hi: int = 10) -> str:
    """A capitalised sentence of ``lo``..``hi`` random words ending with a full stop."""
    text = " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
    return text[0].upper() + text[1:] + "."
