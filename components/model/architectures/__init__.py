"""Architectures: one module per architecture, each exporting one ``SPEC`` (an `Architecture`).

| name | family | class | connector | packing | splitting |
|---|---|---|---|---|---|
| idefics3 | self-attention | Idefics3ForConditionalGeneration | pixel shuffle + linear | yes | tiles + global view |
| llava | self-attention | LlavaForConditionalGeneration | 2-layer MLP | no | no |
| idefics2 | self-attention | Idefics2ForConditionalGeneration | MLP + perceiver resampler | yes | 2x2 crops + whole |
| idefics | cross-attention | IdeficsForVisionText2Text | perceiver + gated cross-attention | no | no |

Every assembled model is a stock transformers class: `AutoModelForImageTextToText` and
`AutoProcessor` load it with nothing from this project. This package is light (the recipe
schema reads ``ARCHITECTURES`` from it); a spec module, which imports transformers, is
imported on first use. Adding an architecture: a module here with its ``SPEC``, and its
name in ``ARCHITECTURES``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ARCHITECTURES: tuple[str, ...] = ("idefics3", "llava", "idefics2", "idefics")


@dataclass(frozen=True)
class Features:
    """What a recipe may ask of an architecture; the recipe validator refuses the rest."""

    packing: bool  # several conversations per row, attention kept inside each
    splitting: bool  # resolution above the tower's native size, by tiles or crops
    serving: bool = True  # behind `mlflow models serve` (registry.pyfunc_model)


@dataclass(frozen=True)
class Architecture:
    """Everything the platform needs to know of one architecture."""

    name: str
    model_type: str  # config.model_type of the assembled model
    family: str  # "self-attention" | "cross-attention"
    # (vision, lm, tokenizer, model_spec, seed) -> the VLM, both backbones copied in exactly
    assemble: Callable[..., Any]
    # (model, tokenizer, longest_edge, *, image_mean, image_std) -> the processor of one
    # stage's resolution, normalising as the vision tower was trained
    processor: Callable[..., Any]
    # parameter group -> name prefixes of the stock class (components.model.freeze)
    groups: dict[str, tuple[str, ...]]
    # model_spec -> the connector as the model card describes it
    card: Callable[[Any], str]
    supports: Features
    # ModelSpec options this architecture reads (the others must stay at their defaults)
    options: tuple[str, ...] = field(default=())
    # (model, pixel_values) -> None: standardise each image-feature channel over training
    # images, folded into the weights (`standardize_features`; None where not offered)
    standardize: Callable[..., None] | None = None


_modules = {m.name for m in pkgutil.iter_modules(__path__)}
if _modules != set(ARCHITECTURES):
    raise RuntimeError(f"architecture modules {sorted(_modules)} != ARCHITECTURES {list(ARCHITECTURES)}")


def spec(name: str) -> Architecture:
    """The spec of architecture ``name`` (its module imported on first use)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {list(ARCHITECTURES)}")
    found = importlib.import_module(f"{__name__}.{name}").SPEC
    if found.name != name:
        raise RuntimeError(f"{__name__}.{name} exports the spec of {found.name!r}")
    return found


def spec_of(model: Any) -> Architecture:
    """The spec of an assembled (or loaded) VLM, from its config's model_type."""
    model_type = model.config.model_type
    for name in ARCHITECTURES:
        if spec(name).model_type == model_type:
            return spec(name)
    raise ValueError(f"not a VLM this project builds: {model_type!r}")
