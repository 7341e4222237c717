"""Cache keys are pinned: no cached stage, backbone or score is recomputed because the recipe
schema changed. recipe_cache_keys.json holds each shipped recipe's keys (with a fixed parent
version and data version) as the schema of 2026-12-02 (issue 17) computed them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.recipe import (
    backbone_cache_key,
    evaluation_cache_key,
    load_recipe,
    stage_cache_key,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PINNED = json.loads((Path(__file__).with_name("recipe_cache_keys.json")).read_text())
PARENT, DATA = "parent-7", "data-abc123"


def test_every_shipped_recipe_is_pinned():
    recipes = {p.name for p in CONFIGS.glob("*.yaml")} - {"data-all-families.yaml"}  # data only
    assert recipes == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_cache_keys_of_a_shipped_recipe_are_unchanged(name):
    recipe = load_recipe(CONFIGS / name)
    keys = {"stages": {s.name: stage_cache_key(recipe, s, PARENT, DATA) for s in recipe.stages},
            "evaluate": evaluation_cache_key(recipe, DATA)}
    if recipe.backbones is not None:
        keys["backbones"] = {b.registered_model: backbone_cache_key(recipe, b, DATA)
                             for b in (recipe.backbones.vision, recipe.backbones.text)}
    assert keys == PINNED[name]
