"""OCR samples: a word, number or two-word phrase rendered on a flat, gradient or noise background."""

from __future__ import annotations

import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.fonts import available_fonts, load_font
from components.data.synthetic.rng import numpy_rng, sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "ocr"
PROMPT = "What is written in the image?"
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise")
MIN_CONTRAST = 3.0
MAX_PHRASE_CHARS = 11
MIN_FONT_FRACTION = 0.2


def sample_text(rng: random.Random) -> str:
    """A word (45 %), a 1-4 digit number (25 %) or a short two-word phrase (30 %)."""
    u = rng.random()
    if u < 0.45:
        return rng.choice(WORDS)
    if u < 0.70:
        digits = rng.randint(1, 4)
        return str(rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1))
    while True:
        phrase = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
        if len(phrase) <= MAX_PHRASE_CHARS:
            return phrase


def luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of sRGB values in 0..255 (last axis = channels)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def contrast_ratio(l1: float, l2: float) -> float:
    """WCAG contrast ratio of two relative luminances."""
    hi, lo = max(l1, l2), min(l1, l2)
    return (hi + 0.05) / (lo + 0.05)


def background(rng: random.Random, kind: str, size: int) -> np.ndarray:
    """An RGB float array (size, size, 3): flat colour, two-colour gradient or noisy colour."""
    base = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float64)
    if kind == "flat":
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == "gradient":
        other = np.clip(base + np.array([rng.randint(-70, 70) for _ in range(3)]), 0, 255)
        axis = rng.choice(("horizontal", "vertical", "diagonal"))
        ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = {"horizontal": xs, "vertical": ys, "diagonal": (xs + ys) / 2}[axis]
        return base + (other - base) * t[..., None]
    noise = numpy_rng(rng).normal(0.0, rng.uniform(6.0, 18.0), (size, size, 3))
    return np.clip(base + noise, 0, 255)


def text_colour(rng: random.Random, pixels: np.ndarray) -> tuple[int, int, int] | None:
    """A random colour with contrast >= 3 against the background's luminance range, or None."""
    lum = luminance(pixels.reshape(-1, 3))
    lo, hi = float(np.percentile(lum, 1)), float(np.percentile(lum, 99))
    for _ in range(30):
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        lt = float(luminance(np.array(colour)))
        if min(contrast_ratio(lt, lo), contrast_ratio(lt, hi)) >= MIN_CONTRAST:
            return colour
    for colour in ((0, 0, 0), (255, 255, 255)):
        lt = float(luminance(np.array(colour)))
        if min(contrast_ratio(lt, lo), contrast_ratio(lt, hi)) >= MIN_CONTRAST:
            return colour
    return None


_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))


def text_bbox(font: ImageFont.FreeTypeFont, text: str) -> tuple[float, float, float, float]:
    """Ink box of (possibly multi-line, centre-aligned) text drawn at the origin."""
    return _MEASURE.multiline_textbbox((0, 0), text, font=font, align="center")


def fit_font(path: str, text: str, max_width: float, max_height: float) -> ImageFont.FreeTypeFont:
    """The largest font size whose rendered text fits inside max_width x max_height."""
    lo, hi = 4, max(5, int(max_height * 2))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        x0, y0, x1, y1 = text_bbox(load_font(path, mid), text)
        if x1 - x0 <= max_width and y1 - y0 <= max_height:
            lo = mid
        else:
            hi = mid - 1
    return load_font(path, lo)


def layout(
    path: str, text: str, fill: float, image_size: int
) -> tuple[str, ImageFont.FreeTypeFont]:
    """Font for ``text`` filling ``fill`` of the width; a phrase too small on one line gets two."""
    max_h = 0.8 * image_size
    font = fit_font(path, text, fill * image_size, max_h)
    if font.size >= MIN_FONT_FRACTION * image_size:
        return text, font
    if " " in text:
        stacked = text.replace(" ", "\n")
        font2 = fit_font(path, stacked, fill * image_size, max_h)
        if font2.size > font.size:
            return stacked, font2
    return text, fit_font(path, text, 0.95 * image_size, max_h)


def render_text(
    rng: random.Random, text: str, image_size: int
) -> tuple[Image.Image, dict[str, object]]:
    """Render ``text`` centred (a long phrase may wrap onto two lines); image and metadata."""
    while True:
        kind = rng.choice(BACKGROUND_KINDS)
        pixels = background(rng, kind, image_size)
        colour = text_colour(rng, pixels)
        if colour is not None:
            break
    path = rng.choice(available_fonts())
    fill = rng.uniform(0.5, 0.9)
    drawn, font = layout(path, text, fill, image_size)
    image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    x0, y0, x1, y1 = text_bbox(font, drawn)
    origin = ((image_size - (x1 - x0)) / 2 - x0, (image_size - (y1 - y0)) / 2 - y0)
    ImageDraw.Draw(image).multiline_text(origin, drawn, font=font, fill=colour, align="center")
    meta = {
        "background": kind,
        "font": os.path.basename(path),
        "font_size": font.size,
        "lines": drawn.count("\n") + 1,
    }
    return image, meta


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """ "What is written in the image?" -> the rendered text."""
    rng = sample_rng(seed, split, SOURCE, index)
    text = sample_text(rng)
    image, meta = render_text(rng, text, image_size)
    return reading_sample(SOURCE, split, index, PROMPT, text, image, meta)


def reading_sample(source: str, split: str, index: int, prompt: str, text: str,
                   image: Image.Image, meta: dict[str, object]) -> Sample:
    """An OCR sample: ``prompt`` about ``image`` -> ``text``, the renderer's ``meta`` kept."""
    record = {
        "task": "ocr",
        "source": source,
        "messages": [user_turn(prompt, 1), assistant_turn(text)],
        "answers": [text],
        **meta,
    }
    return Sample(sample_key(source, split, index), [image], record)
