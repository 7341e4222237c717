"""A shape scene: objects, layout, rendering and captions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from components.data.synthetic.rng import numpy_rng

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (245, 245, 245),
    (232, 232, 232),
    (226, 233, 242),
    (238, 234, 226),
    (230, 242, 232),
)
NUMBER_WORDS = ("no", "one", "two", "three")
# an object's side as a share of the canvas, uniform in the range
SIZES: tuple[float, float] = (0.30, 0.38)
# an image style only the test split draws: page tints, larger objects and a canvas size
# (HELD_OUT_CANVAS x image_size) that training never draws
HELD_OUT_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (250, 228, 238),
    (222, 246, 248),
    (214, 214, 214),
    (248, 244, 214),
)
HELD_OUT_SIZES: tuple[float, float] = (0.39, 0.43)
HELD_OUT_CANVAS = 1.25


@dataclass(frozen=True)
class SceneObject:
    """One coloured shape in one quadrant."""

    colour: str
    shape: str
    quadrant: str

    def as_dict(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "quadrant": self.quadrant}

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def noun_phrase(self) -> str:
        return indefinite(self.phrase)


@dataclass(frozen=True)
class Scene:
    """1-3 objects in distinct quadrants, in reading order, no repeated (colour, shape)."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    sizes: tuple[float, float] = SIZES

    def has(self, colour: str, shape: str) -> bool:
        return any(o.colour == colour and o.shape == shape for o in self.objects)

    def count(self, shape: str) -> int:
        return sum(o.shape == shape for o in self.objects)

    def unique_shapes(self) -> list[str]:
        return [s for s in SHAPES if self.count(s) == 1]

    def unique_colours(self) -> list[str]:
        return [c for c in COLOURS if sum(o.colour == c for o in self.objects) == 1]


def indefinite(phrase: str) -> str:
    """The phrase with its indefinite article ("a red circle", "an orange square")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def reading_order(objects: list[SceneObject] | tuple[SceneObject, ...]) -> tuple[SceneObject, ...]:
    """Objects sorted top left, top right, bottom left, bottom right."""
    return tuple(sorted(objects, key=lambda o: QUADRANTS.index(o.quadrant)))


def sample_scene(rng: random.Random, require_unique_shape: bool = False,
                 require_unique_colour: bool = False, held_out_style: bool = False) -> Scene:
    """Draw a scene; with ``require_unique_shape`` (``_colour``) some shape (colour) occurs
    exactly once; ``held_out_style``: a background and object sizes training never draws."""
    while True:
        n = rng.randint(1, 3)
        quadrants = rng.sample(QUADRANTS, n)
        combos = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
        objects = reading_order(
            [SceneObject(c, s, q) for (c, s), q in zip(combos, quadrants, strict=True)]
        )
        if held_out_style:
            scene = Scene(objects, rng.choice(HELD_OUT_BACKGROUNDS), HELD_OUT_SIZES)
        else:
            scene = Scene(objects, rng.choice(BACKGROUNDS))
        if (not require_unique_shape or scene.unique_shapes()) and (
                not require_unique_colour or scene.unique_colours()):
            return scene


def render_scene(scene: Scene, rng: random.Random, image_size: int = 64) -> Image.Image:
    """Draw the scene on a lightly noisy flat background (RGB, ``image_size`` square)."""
    noise = numpy_rng(rng).normal(0.0, 3.0, (image_size, image_size, 3))
    pixels = np.clip(np.asarray(scene.background, dtype=np.float64) + noise, 0, 255)
    image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    half = image_size // 2
    margin = max(1, image_size // 32)
    for obj in scene.objects:
        side = round(rng.uniform(*scene.sizes) * image_size)
        slack = half - side - 2 * margin
        qi = QUADRANTS.index(obj.quadrant)
        x0 = (qi % 2) * half + margin + (rng.randint(0, slack) if slack > 0 else 0)
        y0 = (qi // 2) * half + margin + (rng.randint(0, slack) if slack > 0 else 0)
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        fill = COLOURS[obj.colour]
        if obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.polygon([(x0 + (side - 1) / 2, y0), (box[2], box[3]), (x0, box[3])], fill=fill)
    return image


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(objects: tuple[SceneObject, ...] | list[SceneObject]) -> str:
    """The canonical dense caption: objects in reading order with colour, shape and quadrant."""
    return _join([f"{o.noun_phrase} at the {o.quadrant}" for o in reading_order(objects)]) + "."


def reference_captions(scene: Scene) -> list[str]:
    """The canonical caption followed by three paraphrases (other templates and orders)."""
    objs = reading_order(scene.objects)
    n = len(objs)
    shapes = "shape" if n == 1 else "shapes"
    return [
        caption(objs),
        "there is " + _join([f"{o.noun_phrase} in the {o.quadrant}" for o in objs]) + ".",
        _join([f"{o.noun_phrase} is at the {o.quadrant}" for o in reversed(objs)]) + ".",
        f"the image shows {NUMBER_WORDS[n]} {shapes}: "
        + _join([f"{o.noun_phrase} ({o.quadrant})" for o in objs])
        + ".",
    ]
