"""Reading curriculum: a 1-3 digit number printed dark on a light-tinted page, anywhere on it.

The glyphs are small on purpose (12-16 px tall on a 64 px page, after a first lesson of
20-28 px ones, ``digits_large``): the page downscaled to 16 px shows them 3-4 px tall, so
what the model reads depends on the resolution it sees (configs/ablations/resolution.yaml).
"""

from __future__ import annotations

import functools
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from components.data.sample import Sample
from components.data.synthetic.fonts import available_fonts, load_font
from components.data.synthetic.ocr import reading_sample
from components.data.synthetic.rng import numpy_rng, sample_rng

SOURCE = "digits"
LARGE_SOURCE = "digits_large"
PROMPT = "What number is written in the image?"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "LiberationSans-Regular.ttf")
GLYPH_PX = (12, 16)  # digit height on a 64 px page (scaled with the page)
MAX_DIGITS = 3
LARGE_GLYPH_PX = (20, 28)  # the curriculum's first lesson: large glyphs, at most two digits
LARGE_MAX_DIGITS = 2
MARGIN = 2


@functools.cache
def reading_fonts() -> tuple[str, ...]:
    """The plain sans fonts of FONTS that are installed (any available font if none is)."""
    fonts = tuple(p for p in available_fonts() if os.path.basename(p) in FONTS)
    return fonts or available_fonts()[:1]


@functools.lru_cache(maxsize=1024)
def font_for_height(path: str, height: int) -> ImageFont.FreeTypeFont:
    """The largest size of the font whose digits are at most ``height`` px tall."""
    size = height
    while size < 4 * height and _digit_height(path, size + 1) <= height:
        size += 1
    return load_font(path, size)


def _digit_height(path: str, size: int) -> int:
    x0, y0, x1, y1 = load_font(path, size).getbbox("0123456789")
    return y1 - y0


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """ "What number is written in the image?" -> the number, as printed (small glyphs)."""
    return _sample(SOURCE, seed, index, split, image_size, MAX_DIGITS, GLYPH_PX)


def generate_large(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """The same question about one or two large digits (the first lesson)."""
    return _sample(LARGE_SOURCE, seed, index, split, image_size, LARGE_MAX_DIGITS, LARGE_GLYPH_PX)


def _sample(source: str, seed: int, index: int, split: str, image_size: int, max_digits: int,
            glyph_px: tuple[int, int]) -> Sample:
    rng = sample_rng(seed, split, source, index)
    text = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, max_digits)))
    image, meta = render(rng, text, image_size, glyph_px)
    return reading_sample(source, split, index, PROMPT, text, image, meta)


def render(rng: random.Random, text: str, image_size: int, glyph_px: tuple[int, int] = GLYPH_PX
           ) -> tuple[Image.Image, dict[str, object]]:
    """``text`` in a dark ink at a random place on a light-tinted, slightly noisy page."""
    paper = np.array([rng.randint(165, 255) for _ in range(3)], dtype=np.float64)
    noise = numpy_rng(rng).normal(0.0, rng.uniform(0.0, 8.0), (image_size, image_size, 1))
    pixels = np.clip(paper + noise, 0, 255)
    image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    path = rng.choice(reading_fonts())
    height = max(4, round(rng.randint(*glyph_px) * image_size / 64))
    font = font_for_height(path, height)
    x0, y0, x1, y1 = font.getbbox(text)
    free_x = max(0, image_size - (x1 - x0) - 2 * MARGIN)
    free_y = max(0, image_size - (y1 - y0) - 2 * MARGIN)
    origin = (MARGIN + rng.randint(0, free_x) - x0, MARGIN + rng.randint(0, free_y) - y0)
    ink = rng.randint(0, 80)
    ImageDraw.Draw(image).text(origin, text, font=font, fill=(ink, ink, ink))
    return image, {"font": os.path.basename(path), "glyph_px": height, "paper": [int(c) for c in paper], "ink": ink}
