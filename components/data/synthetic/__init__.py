"""The synthetic generator families: one module per family, one registry (``FAMILIES``).

A source is a name a recipe's data section and a stage's ``sources`` use; its generator is
``<module>.<function>(seed, index, split, image_size) -> Sample``, a pure function of its
arguments, and ``task`` is the task of every record it makes. Adding a family: write its
module here and add one row below. Generator modules are imported on first use, so this
package stays cheap to import (the recipe schema reads ``SOURCES`` from it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    module: str  # under components.data.synthetic
    function: str
    task: str  # the records' `task`
    default: bool = False  # in the default tiny corpus (others count 0 unless a recipe asks)


FAMILIES: dict[str, Family] = {
    "scenes_caption": Family("scenes", "generate_caption", "caption", default=True),
    "scenes_vqa": Family("scenes", "generate_vqa", "vqa", default=True),
    "ocr": Family("ocr", "generate", "ocr", default=True),
    "text": Family("text_tasks", "generate", "text", default=True),
    "preference": Family("preference", "generate", "preference", default=True),
    "scenes_alt_caption": Family("scenes_alt", "generate", "caption"),
    "scenes_relations": Family("scenes_relations", "generate", "vqa"),
    "ocr_wild": Family("ocr_wild", "generate", "ocr"),
    "digits": Family("digits", "generate", "ocr"),
    "digits_large": Family("digits", "generate_large", "ocr"),
    "documents": Family("documents", "generate", "document"),
    "charts": Family("charts", "generate", "chart"),
    "tables": Family("tables", "generate", "table"),
    "counting": Family("counting", "generate", "counting"),
    "geometry": Family("geometry", "generate", "geometry"),
    "spot_difference": Family("spot_difference", "generate", "spot_difference"),
    "interleaved": Family("interleaved", "generate", "interleaved"),
    "instructions": Family("instructions", "generate", "text"),
    "preference_hallucination": Family("preference_hallucination", "generate", "preference"),
}
SOURCES: tuple[str, ...] = tuple(FAMILIES)
SOURCE_TASK: dict[str, str] = {name: f.task for name, f in FAMILIES.items()}
TEXT_ONLY_SOURCES: tuple[str, ...] = tuple(s for s, t in SOURCE_TASK.items() if t == "text")
DEFAULT_SOURCES: tuple[str, ...] = tuple(s for s, f in FAMILIES.items() if f.default)
EXTRA_SOURCES: tuple[str, ...] = tuple(s for s in SOURCES if s not in DEFAULT_SOURCES)

Generator = Callable[[int, int, str, int], Any]


def generator(source: str) -> Generator:
    """The generator function of ``source`` (its module imported on first use)."""
    family = FAMILIES.get(source)
    if family is None:
        raise ValueError(f"unknown source {source!r}; expected one of {list(SOURCES)}")
    module = importlib.import_module(f"{__name__}.{family.module}")
    return getattr(module, family.function)
