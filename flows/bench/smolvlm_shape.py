"""The SmolVLM-256M-shaped model on this machine, with no download: configs/smolvlm-256m.yaml's
backbones at their hub shapes (SigLIP-B/16-512 and SmolLM2-135M, the config.json copies in
tests/components/model/hub_configs) saved as hub-layout folders with random weights (the LM
with a tokenizer of its own), synthetic shards at the recipe's 512 px tile, and the recipe
pointed at both. ``scale`` shrinks the backbones' widths and depths (every head count, the
patch grid, the pixel shuffle and the vocabulary kept) for a test of the same path.

Used by `vlmforge bench memory` and tests/integration/test_real_size.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "smolvlm-256m.yaml"
HUB_CONFIGS = ROOT / "tests" / "components" / "model" / "hub_configs"
TILE = 512  # the vision tower's image size: one tile, 64 image tokens after pixel shuffle 4


@dataclass(frozen=True)
class Scale:
    """Backbone widths (hidden units per attention head) and depths; None: the hub's."""

    vision_width: int | None = None
    vision_layers: int | None = None
    text_width: int | None = None
    text_layers: int | None = None


REAL = Scale()
TEST = Scale(vision_width=8, vision_layers=2, text_width=8, text_layers=2)


def hub_config(hub_id: str) -> dict[str, Any]:
    """The stored config.json of a hub backbone the recipe names."""
    return json.loads((HUB_CONFIGS / hub_id.replace("/", "--") / "config.json").read_text())


def _shaped(config: dict[str, Any], width: int | None, layers: int | None) -> dict[str, Any]:
    from components.model.random_backbones import scaled

    if width is None:
        return config
    return scaled(config, width=width, layers=layers or config["num_hidden_layers"])


def write_backbones(root: Path, shards: Path, scale: Scale = REAL) -> tuple[Path, Path]:
    """The recipe's two backbones in hub layout under ``root`` (``vision/``, ``text/``); the
    LM's tokenizer is trained on the train split's texts of ``shards``."""
    from components.data.tokenizer import corpus_texts
    from components.model.random_backbones import save_hub_backbones, vision_part

    model = yaml.safe_load(RECIPE.read_text())["model"]
    vision = _shaped(vision_part(hub_config(model["vision"])), scale.vision_width, scale.vision_layers)
    text = _shaped(hub_config(model["text"]), scale.text_width, scale.text_layers)
    return save_hub_backbones(vision, text, corpus_texts(shards, "train"), root)


def write_shards(shards: Path, counts: dict[str, dict[str, int]], image_size: int = TILE,
                 seed: int = 0) -> Path:
    """One shard per split and source (``counts``: split -> source -> samples), as the data
    stage lays them out (``<split>/<source>-0000.tar``)."""
    from components.data.corpus import generate_samples
    from components.data.shards import write_shard

    for split, sources in counts.items():
        for source, n in sources.items():
            write_shard(generate_samples(source, seed, split, 0, n, image_size=image_size),
                        shards / split / f"{source}-0000.tar")
    return shards


def local_recipe(vision: Path, text: Path, stages: list[dict[str, Any]], **fields: Any):
    """configs/smolvlm-256m.yaml on the local backbone folders, with ``stages`` (and any
    other top-level ``fields``) replacing its own."""
    from components.recipe import Recipe

    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"] = {**raw["model"], "vision": str(vision), "text": str(text),
                    **fields.pop("model", {})}
    raw["data"] = {**raw["data"], "image_size": TILE, **fields.pop("data", {})}
    return Recipe.model_validate({**raw, "stages": stages, **fields})
