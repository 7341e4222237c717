"""CHAIR-style caption hallucination on shape scenes (Rohrbach et al., 2018).

A caption hallucinates when it names an object the scene does not hold: a "<colour> <shape>"
whose pair is absent, or a bare shape that is not in the scene at all. Reported per caption
(CHAIR_s: share of captions with at least one hallucinated object) and per mention (CHAIR_i),
with the object recall beside them: a captioner that names nothing hallucinates nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from components.data.synthetic.scene import COLOURS, SHAPES

_SHAPE = "|".join(SHAPES)
_MENTION = re.compile(rf"\b(?:({'|'.join(COLOURS)})\s+)?({_SHAPE})s?\b")


def mentioned_objects(caption: str) -> list[tuple[str | None, str]]:
    """(colour or None, shape) for every shape named in the caption, in order."""
    return [(m.group(1), m.group(2)) for m in _MENTION.finditer(caption.lower())]


def hallucinated_mentions(caption: str, objects: Sequence[dict]) -> list[str]:
    """The mentions of absent objects ("purple circle", "triangle")."""
    present = {(o["colour"], o["shape"]) for o in objects}
    shapes = {o["shape"] for o in objects}
    out = []
    for colour, shape in mentioned_objects(caption):
        if (colour is None and shape not in shapes) or (colour and (colour, shape) not in present):
            out.append(f"{colour} {shape}" if colour else shape)
    return out


def chair(captions: Sequence[str], objects: Sequence[Sequence[dict]]) -> dict[str, float]:
    """``chair_s`` (captions naming an absent object), ``chair_i`` (share of mentions) and
    ``recall`` (share of the scenes' objects named with their colour)."""
    if len(captions) != len(objects):
        raise ValueError(f"{len(captions)} captions but {len(objects)} object lists")
    if not captions:
        raise ValueError("no captions to score")
    bad = [hallucinated_mentions(c, o) for c, o in zip(captions, objects, strict=True)]
    mentions = sum(len(mentioned_objects(c)) for c in captions)
    named = sum(len({(o["colour"], o["shape"]) for o in objs} & set(mentioned_objects(c)))
                for c, objs in zip(captions, objects, strict=True))
    total = sum(len(objs) for objs in objects)
    return {"chair_s": sum(bool(b) for b in bad) / len(captions),
            "chair_i": sum(map(len, bad)) / mentions if mentions else 0.0,
            "recall": named / total if total else 0.0}
