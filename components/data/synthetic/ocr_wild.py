"""OCR in the wild: every usable TrueType font, colours with a minimum contrast, five kinds of
background (flat, gradient, noise, texture, photo), rotation and size ranges.

Textures and photos are scikit-image's bundled sample images (no download). The text's
colour keeps a WCAG contrast >= ``MIN_CONTRAST`` against the pixels under the text; a
background too busy for any colour gets a flat plate behind the text (``plate: true``).
"""

from __future__ import annotations

import functools
import os
import random
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.fonts import fonts_for, load_font
from components.data.synthetic.ocr import contrast_ratio, luminance
from components.data.synthetic.rng import numpy_rng, sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "ocr_wild"
PROMPTS = ("What is written in the image?", "Read the text in the image.",
           "What does the text say?")
BACKGROUND_KINDS = ("flat", "gradient", "noise", "texture", "photo")
TEXTURES = ("brick.png", "grass.png", "gravel.png")
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png",
          "coins.png", "motorcycle_left.png", "hubble_deep_field.jpg")
MIN_CONTRAST = 3.0
MAX_ROTATION = 30.0
RENDER_SIZE = 40  # text is rasterised at this pixel size, then rotated and scaled to fit
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def sample_text(rng: random.Random, max_chars: int) -> tuple[str, str]:
    """(kind, text): a word in some casing, a number, price, date, time, code or phrase."""
    kind = rng.choice(("word", "word", "number", "price", "date", "time", "code", "phrase"))
    if kind == "word":
        word = rng.choice(WORDS)
        text = rng.choice((word, word.title(), word.upper()))
    elif kind == "number":
        text = str(rng.randint(0, 10 ** rng.randint(1, 5) - 1))
        if rng.random() < 0.3:
            text += f".{rng.randint(0, 99):02d}"
    elif kind == "price":
        text = f"{rng.choice('$€£')}{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    elif kind == "date":
        text = (f"{rng.randint(1, 28)} {rng.choice(MONTHS)}" if rng.random() < 0.5
                else f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}")
    elif kind == "time":
        text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    elif kind == "code":
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 3)))
        text = f"{letters}-{rng.randint(10, 9999)}"
    else:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 3)))
        text = text.title() if rng.random() < 0.3 else text
    if len(text) > max_chars:
        return sample_text(rng, max_chars)
    return kind, text


@functools.cache
def _asset(name: str) -> Image.Image:
    """A scikit-image sample image, RGB (cached per process)."""
    with resources.as_file(resources.files("skimage.data") / name) as path, Image.open(path) as im:
        return im.convert("RGB")


def warm_up() -> None:
    """Load the textures and photos (before forking workers, so they share them)."""
    for name in TEXTURES + PHOTOS:
        _asset(name)


def _crop(rng: random.Random, image: Image.Image, size: int) -> np.ndarray:
    """A random square crop (25-100 % of the short side) resized to ``size``, float RGB."""
    side = int(min(image.size) * rng.uniform(0.25, 1.0))
    x, y = rng.randint(0, image.width - side), rng.randint(0, image.height - side)
    crop = image.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side))
    return np.asarray(crop, dtype=np.float32)


def background(rng: random.Random, kind: str, size: int) -> np.ndarray:
    """Float RGB (size, size, 3) background of one of ``BACKGROUND_KINDS``."""
    base = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    if kind == "flat":
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == "gradient":
        other = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)
        t = t[None, :, None] if rng.random() < 0.5 else t[:, None, None]
        return np.broadcast_to(base + (other - base) * t, (size, size, 3)).copy()
    if kind == "noise":
        noise = numpy_rng(rng).normal(0.0, rng.uniform(8.0, 30.0), (size, size, 3))
        return np.clip(base + noise, 0, 255).astype(np.float32)
    if kind == "texture":
        grey = _crop(rng, _asset(rng.choice(TEXTURES)), size).mean(axis=2, keepdims=True) / 255.0
        return np.clip(base * (0.5 + grey), 0, 255)
    return _crop(rng, _asset(rng.choice(PHOTOS)), size)


def _raster(path: str, text: str, px: int, angle: float) -> Image.Image:
    """``text`` at font size ``px`` as an alpha mask, rotated by ``angle`` degrees."""
    font = load_font(path, px)
    x0, y0, x1, y1 = font.getbbox(text)
    pad = 2
    mask = Image.new("L", (int(x1 - x0) + 2 * pad, int(y1 - y0) + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - x0, pad - y0), text, font=font, fill=255)
    if angle:
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return mask


def text_mask(
    rng: random.Random, path: str, text: str, size: int
) -> tuple[Image.Image, float]:
    """The text's alpha mask, rotated by up to ``MAX_ROTATION``, its width 35-95 % of the
    image (longer texts wider) and its height at most 90 %. Measured at ``RENDER_SIZE``,
    then rasterised again at the font size that fits, so strokes stay crisp."""
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION) if rng.random() < 0.5 else 0.0
    probe = _raster(path, text, RENDER_SIZE, angle)
    fill = rng.uniform(min(0.95, max(0.35, 0.06 * len(text))), 0.95)
    scale = min(fill * size / probe.width, 0.9 * size / probe.height)
    mask = _raster(path, text, max(6, int(RENDER_SIZE * scale)), angle)
    if mask.width > 0.95 * size or mask.height > 0.9 * size:  # rounding, or the 6 px floor
        fit = min(0.95 * size / mask.width, 0.9 * size / mask.height)
        new = (max(1, int(mask.width * fit)), max(1, int(mask.height * fit)))
        mask = mask.resize(new, Image.Resampling.BILINEAR)
    return mask, round(angle, 1)


def pick_colour(rng: random.Random, region: np.ndarray) -> tuple[int, int, int] | None:
    """A random colour with contrast >= MIN_CONTRAST against the region's 5th and 95th
    percentile luminance, or None."""
    lum = luminance(region.reshape(-1, 3))
    lo, hi = float(np.percentile(lum, 5)), float(np.percentile(lum, 95))
    for _ in range(20):
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        lt = float(luminance(np.array(colour)))
        if min(contrast_ratio(lt, lo), contrast_ratio(lt, hi)) >= MIN_CONTRAST:
            return colour
    return None


def render(rng: random.Random, text: str, size: int) -> tuple[Image.Image, dict[str, object]]:
    """The text composited on a background; image and metadata."""
    kind = rng.choice(BACKGROUND_KINDS)
    pixels = background(rng, kind, size)
    path = rng.choice(fonts_for(text) or fonts_for("0123456789"))
    mask, angle = text_mask(rng, path, text, size)
    x, y = rng.randint(0, size - mask.width), rng.randint(0, size - mask.height)
    box = (slice(y, y + mask.height), slice(x, x + mask.width))
    colour = pick_colour(rng, pixels[box])
    plate = colour is None
    if plate:  # too busy: a flat plate of the region's mean colour behind the text
        pixels[box] = pixels[box].reshape(-1, 3).mean(axis=0)
        colour = pick_colour(rng, pixels[box]) or (
            (0, 0, 0) if float(luminance(pixels[box][0, 0])) > 0.18 else (255, 255, 255))
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    pixels[box] = pixels[box] * (1.0 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    meta = {"background": kind, "font": os.path.basename(path), "rotation": angle,
            "text_height": mask.height, "colour": list(colour), "plate": plate}
    return image, meta


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """"What is written in the image?" -> the text (its length grows with the image size)."""
    rng = sample_rng(seed, split, SOURCE, index)
    kind, text = sample_text(rng, max(8, image_size // 5))
    image, meta = render(rng, text, image_size)
    record = {"task": "ocr", "source": SOURCE, "kind": kind,
              "messages": [user_turn(rng.choice(PROMPTS), 1), assistant_turn(text)],
              "answers": [text], **meta}
    return Sample(sample_key(SOURCE, split, index), [image], record)
