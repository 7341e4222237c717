"""Questions about a scene: colour, count, position, existence and shape, with exact answers."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

from components.data.synthetic.phrasings import CANONICAL_SHARE, phrase
from components.data.synthetic.scene import COLOURS, SHAPES, Scene

QTYPES: tuple[str, ...] = ("colour", "count", "position", "existence", "shape")


@dataclass(frozen=True)
class QA:
    """One question with its answer (lower case, no trailing punctuation)."""

    qtype: str
    question: str
    answer: str
    absent: bool | None = None
    negative: str | None = None
    phrasing: str = "seen"  # "unseen": a held-out phrasing (components/data/synthetic/phrasings.py)

    def extra(self) -> dict[str, Any]:
        """Record keys describing the question: qtype, phrasing, and absent/negative for
        existence."""
        out: dict[str, Any] = {"qtype": self.qtype, "phrasing": self.phrasing}
        if self.absent is not None:
            out["absent"] = self.absent
        if self.negative is not None:
            out["negative"] = self.negative
        return out


def stratified(index: int) -> tuple[str, dict[str, bool]]:
    """Question type, existence polarity and phrasing fixed by the index, so any run of
    ``8 * len(QTYPES)`` is balanced (absent objects alternate between hard and random; each
    half of the run asks in seen, the other in held-out phrasings)."""
    n = len(QTYPES)
    qtype = QTYPES[index % n]
    spec: dict[str, bool] = {"unseen": (index // (4 * n)) % 2 == 1}
    if qtype == "existence":
        spec["absent"] = (index // n) % 2 == 1
        if spec["absent"]:
            spec["hard"] = (index // (2 * n)) % 2 == 0
    return qtype, spec


def held_out_style(index: int) -> bool:
    """Whether a test question's image is drawn in a held-out style: a quarter of each run of
    ``32 * len(QTYPES)`` indices, balanced over question type and phrasing."""
    return (index // (8 * len(QTYPES))) % 4 == 3


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
    unseen: bool = False,
    canonical_share: float = 0.0,
) -> QA:
    """One question of ``qtype`` in a random seen phrasing (``unseen``: a held-out one);
    existence polarity and negative kind are random unless given."""
    phrasing = "unseen" if unseen else "seen"
    say = functools.partial(phrase, qtype, rng, unseen=unseen, canonical_share=canonical_share)
    if qtype == "colour":
        unique = scene.unique_shapes()
        if not unique:
            raise ValueError("colour question needs a shape that occurs exactly once")
        shape = rng.choice(unique)
        colour = next(o.colour for o in scene.objects if o.shape == shape)
        return QA(qtype, say(shape=shape), colour, phrasing=phrasing)
    if qtype == "shape":
        unique = scene.unique_colours()
        if not unique:
            raise ValueError("shape question needs a colour that occurs exactly once")
        colour = rng.choice(unique)
        shape = next(o.shape for o in scene.objects if o.colour == colour)
        return QA(qtype, say(colour=colour), shape, phrasing=phrasing)
    if qtype == "count":
        if rng.random() < 0.75:
            shape = rng.choice(scene.objects).shape
        else:
            shape = rng.choice(SHAPES)
        return QA(qtype, say(shape=shape), str(scene.count(shape)),
                  phrasing=phrasing)
    if qtype == "position":
        obj = rng.choice(scene.objects)
        question = say(colour=obj.colour, shape=obj.shape)
        return QA(qtype, question, obj.quadrant, phrasing=phrasing)
    if qtype == "existence":
        if absent is None:
            absent = rng.random() < 0.5
        if not absent:
            obj = rng.choice(scene.objects)
            question = say(colour=obj.colour, shape=obj.shape)
            return QA(qtype, question, "yes", absent=False, phrasing=phrasing)
        if hard is None:
            hard = rng.random() < 0.5
        colour, shape = absent_combo(scene, rng, hard)
        negative = "hard" if hard else "random"
        question = say(colour=colour, shape=shape)
        return QA(qtype, question, "no", absent=True, negative=negative, phrasing=phrasing)
    raise ValueError(f"unknown question type {qtype!r}; expected one of {list(QTYPES)}")


def conversation(scene: Scene, rng: random.Random, n_turns: int) -> list[QA]:
    """``n_turns`` distinct questions of mixed types about one scene, ``CANONICAL_SHARE`` of
    them in the canonical phrasing."""
    allowed = [q for q in QTYPES
               if (q != "colour" or scene.unique_shapes()) and (q != "shape" or scene.unique_colours())]
    plan = rng.sample(allowed, len(allowed))
    out: list[QA] = []
    seen: set[str] = set()
    while len(out) < n_turns:
        qtype = plan[len(out)] if len(out) < len(plan) else rng.choice(allowed)
        qa = ask(scene, rng, qtype, canonical_share=CANONICAL_SHARE)
        if qa.question in seen:
            qa = ask(scene, rng, "existence", canonical_share=CANONICAL_SHARE)
            if qa.question in seen:
                continue
        seen.add(qa.question)
        out.append(qa)
    return out
