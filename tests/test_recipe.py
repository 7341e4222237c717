"""Recipes validate at load time; a typo names the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from components.recipe import fingerprint, load_recipe

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["tiny.yaml", "micro.yaml"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(CONFIGS / name)
    kinds = [s.kind for s in recipe.stages]
    assert kinds.count("pretrain") >= 2 and "sft" in kinds and "align" in kinds
    edges = [s.longest_edge for s in recipe.stages_of("pretrain")]
    assert edges == sorted(edges) and edges[0] < edges[-1]  # rising resolution


def test_unknown_source_is_named(tmp_path):
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw["stages"][0]["sources"] = ["scenes_caption", "photos"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="unknown sources \\['photos'\\]"):
        load_recipe(path)


def test_unknown_key_is_rejected(tmp_path):
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw["stages"][0]["train"]["stepz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="stepz"):
        load_recipe(path)


def test_fingerprint_changes_with_the_stage_section():
    recipe = load_recipe(CONFIGS / "micro.yaml")
    stage = recipe.stages[0]
    changed = stage.model_copy(update={"longest_edge": 64})
    assert fingerprint(stage, "v1") == fingerprint(stage.model_copy(), "v1")
    assert fingerprint(stage, "v1") != fingerprint(changed, "v1")
    assert fingerprint(stage, "v1") != fingerprint(stage, "v2")


def test_root_params_yaml_matches_the_default_recipe():
    """`dvc repro` at the project root builds exactly the data `vlmforge run` builds."""
    params = yaml.safe_load((CONFIGS.parent / "params.yaml").read_text())
    assert params["data"] == load_recipe(CONFIGS / "tiny.yaml").data.stage_params()


def test_monitoring_settings_leave_a_stages_cache_key_alone():
    from flows.training import stage_cache_key

    recipe = load_recipe(CONFIGS / "tiny.yaml")
    stage = recipe.stages_of("sft")[0]
    quiet = stage.model_copy(update={"train": stage.train.model_copy(
        update={"eval_every": 0, "checkpoint_every": 0})})
    loud = stage.model_copy(update={"train": stage.train.model_copy(
        update={"eval_every": 7, "checkpoint_every": 3})})
    key = stage_cache_key(recipe, quiet, "3", "data1")
    assert key == stage_cache_key(recipe, loud, "3", "data1")
    assert key == fingerprint(quiet, recipe.model, "3", "data1", recipe.seed)  # as keys always were
    slower = stage.model_copy(update={"train": stage.train.model_copy(update={"lr": 1e-5})})
    assert key != stage_cache_key(recipe, slower, "3", "data1")


def test_sample_averaged_loss_is_for_unpacked_supervised_stages():
    from components.recipe import Stage

    base = dict(name="s", longest_edge=32, unfreeze={"text": "full"})
    assert Stage(kind="sft", sources=["scenes_vqa"], loss_average="sample", **base).loss_average == "sample"
    assert "loss_average" not in Stage(kind="sft", sources=["scenes_vqa"], **base).model_dump()
    with pytest.raises(ValueError, match="unpacked"):
        Stage(kind="sft", sources=["scenes_vqa"], loss_average="sample", packing=True, **base)
    with pytest.raises(ValueError, match="unpacked"):
        Stage(kind="align", sources=["preference"], loss_average="sample", **base)


def test_fields_added_later_are_left_out_of_the_dump_at_their_defaults():
    """Older stage cache keys stay valid: a field added later dumps only when it is set."""
    from components.recipe import _LATER_FIELDS, Stage

    base = dict(name="s", kind="pretrain", longest_edge=32, sources=["scenes_vqa"],
                unfreeze={"text": "full"})
    assert not set(_LATER_FIELDS) & set(Stage(**base).model_dump())
    given = Stage(**base, lora_rank=4, split_turns=True, question_types=["colour"],
                 loss_average="sample", mixture={"scenes_vqa": 1.0},
                 ground_connector={"images": 10})
    aligned = Stage(name="a", kind="align", longest_edge=32, sources=["preference"],
                    unfreeze={"text": "full"}, rejected_from="model")
    assert set(_LATER_FIELDS) <= set(given.model_dump()) | set(aligned.model_dump())


def test_backbones_always_take_gradient_steps():
    from components.recipe import Backbones

    with pytest.raises(ValueError, match="backbones.text.train.steps"):
        Backbones(text={"train": {"steps": 0}})
