"""Preference pairs on scenes: a truthful answer chosen, a hallucinating one rejected."""

from __future__ import annotations

import random
from typing import Any

from components.data.sample import Sample, user_turn
from components.data.synthetic.questions import ask
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import (
    COLOURS,
    QUADRANTS,
    SHAPES,
    Scene,
    SceneObject,
    caption,
    render_scene,
    sample_scene,
)
from components.data.synthetic.scenes import CAPTION_PROMPT, scene_record

SOURCE = "preference"


def hallucinate(scene: Scene, rng: random.Random) -> tuple[str, tuple[SceneObject, ...]]:
    """One hallucination: an absent object added ("object"), or a colour/shape changed ("attribute")."""
    objs = list(scene.objects)
    present = {(o.colour, o.shape) for o in objs}
    change = rng.choice(("add", "colour", "shape"))
    if change == "add":
        free = [q for q in QUADRANTS if all(o.quadrant != q for o in objs)]
        colour, shape = rng.choice(sorted({(c, s) for c in COLOURS for s in SHAPES} - present))
        objs.append(SceneObject(colour, shape, rng.choice(free)))
        return "object", tuple(objs)
    i = rng.randrange(len(objs))
    old = objs[i]
    shapes = [s for s in SHAPES if s != old.shape and (old.colour, s) not in present]
    if change == "shape" and shapes:
        objs[i] = SceneObject(old.colour, rng.choice(shapes), old.quadrant)
    else:
        colours = [c for c in COLOURS if c != old.colour and (c, old.shape) not in present]
        objs[i] = SceneObject(rng.choice(colours), old.shape, old.quadrant)
    return "attribute", tuple(objs)


def hard_negative(scene: Scene, rng: random.Random) -> tuple[SceneObject, ...]:
    """A caption's hardest negatives: two objects' colours swapped (a binding error) when
    the scene allows it, else one hallucination."""
    objs = list(scene.objects)
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))
             if objs[i].colour != objs[j].colour]
    if pairs and rng.random() < 0.5:
        i, j = rng.choice(pairs)
        a, b = objs[i], objs[j]
        objs[i], objs[j] = SceneObject(b.colour, a.shape, a.quadrant), SceneObject(a.colour, b.shape, b.quadrant)
        return tuple(objs)
    return hallucinate(scene, rng)[1]


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """Caption (chosen dense caption vs one hallucination) or existence (truth vs opposite), 50/50."""
    rng = sample_rng(seed, split, SOURCE, index)
    scene = sample_scene(rng)
    image = render_scene(scene, rng, image_size)
    extra: dict[str, Any]
    if rng.random() < 0.5:
        prompt, chosen = CAPTION_PROMPT, caption(scene.objects)
        kind, wrong = hallucinate(scene, rng)
        rejected = caption(wrong)
        extra = {"hallucination": kind}
    else:
        qa = ask(scene, rng, "existence")
        prompt, chosen = qa.question, qa.answer
        rejected = "no" if chosen == "yes" else "yes"
        extra = {"hallucination": "existence", **qa.extra()}
    record = scene_record("preference", SOURCE, scene, [user_turn(prompt, 1)])
    record.update(chosen=chosen, rejected=rejected, answers=[chosen], **extra)
    return Sample(sample_key(SOURCE, split, index), [image], record)
