"""Questions about a scene: colour, count, position, existence and shape, with exact answers."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from components.data.synthetic.scene import COLOURS, SHAPES, Scene, indefinite

QTYPES: tuple[str, ...] = ("colour", "count", "position", "existence", "shape")


@dataclass(frozen=True)
class QA:
    """One question with its answer (lower case, no trailing punctuation)."""

    qtype: str
    question: str
    answer: str
    absent: bool | None = None
    negative: str | None = None

    def extra(self) -> dict[str, Any]:
        """Record keys describing the question: qtype, and absent/negative for existence."""
        out: dict[str, Any] = {"qtype": self.qtype}
        if self.absent is not None:
            out["absent"] = self.absent
        if self.negative is not None:
            out["negative"] = self.negative
        return out


def stratified(index: int) -> tuple[str, dict[str, bool]]:
    """Question type and existence polarity fixed by the index, so any run of
    ``4 * len(QTYPES)`` is balanced (absent objects alternate between hard and random)."""
    n = len(QTYPES)
    qtype = QTYPES[index % n]
    spec: dict[str, bool] = {}
    if qtype == "existence":
        spec["absent"] = (index // n) % 2 == 1
        if spec["absent"]:
            spec["hard"] = (index // (2 * n)) % 2 == 0
    return qtype, spec


def absent_combo(scene: Scene, rng: random.Random, hard: bool) -> tuple[str, str]:
    """An absent (colour, shape): hard shares a colour or shape with a present object."""
    if hard:
        pool = {(o.colour, s) for o in scene.objects for s in SHAPES}
        pool |= {(c, o.shape) for o in scene.objects for c in COLOURS}
    else:
        pool = {(c, s) for c in COLOURS for s in SHAPES}
    return rng.choice(sorted(p for p in pool if not scene.has(*p)))


def ask(
    scene: Scene,
    rng: random.Random,
    qtype: str,
    absent: bool | None = None,
    hard: bool | None = None,
) -> QA:
    """One question of ``qtype``; existence polarity and negative kind are random unless given."""
    if qtype == "colour":
        unique = scene.unique_shapes()
        if not unique:
            raise ValueError("colour question needs a shape that occurs exactly once")
        shape = rng.choice(unique)
        colour = next(o.colour for o in scene.objects if o.shape == shape)
        return QA(qtype, f"What colour is the {shape}?", colour)
    if qtype == "shape":
        unique = scene.unique_colours()
        if not unique:
            raise ValueError("shape question needs a colour that occurs exactly once")
        colour = rng.choice(unique)
        shape = next(o.shape for o in scene.objects if o.colour == colour)
        return QA(qtype, f"What shape is the {colour} object?", shape)
    if qtype == "count":
        if rng.random() < 0.75:
            shape = rng.choice(scene.objects).shape
        else:
            shape = rng.choice(SHAPES)
        return QA(qtype, f"How many {shape}s are there?", str(scene.count(shape)))
    if qtype == "position":
        obj = rng.choice(scene.objects)
        return QA(qtype, f"Where is the {obj.phrase}?", obj.quadrant)
    if qtype == "existence":
        if absent is None:
            absent = rng.random() < 0.5
        if not absent:
            obj = rng.choice(scene.objects)
            return QA(qtype, f"Is there {obj.noun_phrase}?", "yes", absent=False)
        if hard is None:
            hard = rng.random() < 0.5
        colour, shape = absent_combo(scene, rng, hard)
        negative = "hard" if hard else "random"
        return QA(
            qtype,
            f"Is there {indefinite(f'{colour} {shape}')}?",
            "no",
            absent=True,
            negative=negative,
        )
    raise ValueError(f"unknown question type {qtype!r}; expected one of {list(QTYPES)}")


def conversation(scene: Scene, rng: random.Random, n_turns: int) -> list[QA]:
    """``n_turns`` distinct questions of mixed types about one scene."""
    allowed = [q for q in QTYPES
               if (q != "colour" or scene.unique_shapes()) and (q != "shape" or scene.unique_colours())]
    plan = rng.sample(allowed, len(allowed))
    out: list[QA] = []
    seen: set[str] = set()
    while len(out) < n_turns:
        qtype = plan[len(out)] if len(out) < len(plan) else rng.choice(allowed)
        qa = ask(scene, rng, qtype)
        if qa.question in seen:
            qa = ask(scene, rng, "existence")
            if qa.question in seen:
                continue
        seen.add(qa.question)
        out.append(qa)
    return out
