"""Interleaved documents (OBELICS-like): paragraphs with 2-4 figures referring to them, then a
question that needs the figures (the text names only one object of each figure)."""

from __future__ import annotations

import random
from typing import Any

from components.data.sample import Sample, assistant_turn
from components.data.synthetic.drawing import sentence
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import Scene, render_scene, sample_scene
from components.data.synthetic.words import WORDS

SOURCE = "interleaved"
QTYPES = ("which", "count", "position")
INTROS = ("Figure {k} shows {obj}{more}.", "In figure {k} we see {obj}{more}.",
          "The next picture, figure {k}, has {obj}{more}.")


def paragraph(rng: random.Random, k: int, scene: Scene) -> str:
    """Filler prose and one sentence naming the figure's first object."""
    more = " among other shapes" if len(scene.objects) > 1 else ""
    intro = rng.choice(INTROS).format(k=k, obj=scene.objects[0].noun_phrase, more=more)
    return f"{sentence(rng, WORDS)} {intro}"


def ask(scenes: list[Scene], rng: random.Random, qtype: str) -> tuple[str, str]:
    """A question about the figures; ``which`` falls back to ``count`` without a unique object."""
    if qtype == "which":
        seen: dict[tuple[str, str], list[int]] = {}
        for k, scene in enumerate(scenes, 1):
            for o in scene.objects:
                seen.setdefault((o.colour, o.shape), []).append(k)
        unique = [(key, ks[0]) for key, ks in seen.items() if len(ks) == 1]
        unnamed = [(key, k) for key, k in unique
                   if (scenes[k - 1].objects[0].colour, scenes[k - 1].objects[0].shape) != key]
        if unnamed or unique:
            (colour, shape), k = rng.choice(unnamed or unique)
            return f"Which figure shows the {colour} {shape}?", f"figure {k}"
        qtype = "count"
    k = rng.randint(1, len(scenes))
    scene = scenes[k - 1]
    if qtype == "count":
        return f"How many shapes are in figure {k}?", str(len(scene.objects))
    obj = rng.choice(scene.objects)
    return f"Where is the {obj.phrase} in figure {k}?", obj.quadrant


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """One user turn: a title line, then paragraph / figure pairs, then a question."""
    rng = sample_rng(seed, split, SOURCE, index)
    n = rng.randint(2, 4)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = [render_scene(s, rng, image_size) for s in scenes]
    title = f"A page about {rng.choice(WORDS)} shapes"
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{title}\n\n"}]
    for k, scene in enumerate(scenes, 1):
        content.append({"type": "text", "text": paragraph(rng, k, scene) + "\n"})
        content.append({"type": "image"})
        content.append({"type": "text", "text": "\n"})
    qtype = QTYPES[index % len(QTYPES)] if split == "test" else rng.choice(QTYPES)
    question, answer = ask(scenes, rng, qtype)
    content.append({"type": "text", "text": question})
    record = {"task": "interleaved", "source": SOURCE, "qtype": qtype,
              "messages": [{"role": "user", "content": content}, assistant_turn(answer)],
              "answers": [answer], "figures": [[o.as_dict() for o in s.objects] for s in scenes]}
    return Sample(sample_key(SOURCE, split, index), images, record)
