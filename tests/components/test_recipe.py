"""Recipes validate at load time; a typo names the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from components.recipe import Recipe, load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["tiny.yaml", "micro.yaml"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(CONFIGS / name)
    kinds = [s.kind for s in recipe.stages]
    assert kinds.count("pretrain") >= 2 and "sft" in kinds and "align" in kinds


@pytest.mark.parametrize("name", ["micro.yaml", "idefics2-8b-style.yaml", "smolvlm-256m.yaml"])
def test_pretraining_rises_in_resolution(name):
    edges = [s.longest_edge for s in load_recipe(CONFIGS / name).stages_of("pretrain")]
    assert edges == sorted(edges) and edges[0] < edges[-1]


def test_the_tiny_recipe_stays_on_its_towers_view():
    """Chosen on val (the stage-64px and stay-32px studies): tiling its 64 px images into
    32 px tiles cost the tiny model colour, VQA and alignment; reading is where resolution
    pays (the resolution study's tiny-reading recipe)."""
    recipe = load_recipe(CONFIGS / "tiny.yaml")
    assert {s.longest_edge for s in recipe.stages} == {recipe.backbones.vision.config["image_size"]}


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


def test_stage_key_changes_with_the_stage_section_parent_and_data():
    from components.recipe import stage_cache_key

    recipe = load_recipe(CONFIGS / "micro.yaml")
    stage = recipe.stages[0]
    changed = stage.model_copy(update={"longest_edge": 64})
    assert stage_cache_key(recipe, stage, "v1", "d") == stage_cache_key(recipe, stage.model_copy(), "v1", "d")
    assert stage_cache_key(recipe, stage, "v1", "d") != stage_cache_key(recipe, changed, "v1", "d")
    assert stage_cache_key(recipe, stage, "v1", "d") != stage_cache_key(recipe, stage, "v2", "d")
    assert stage_cache_key(recipe, stage, "v1", "d") != stage_cache_key(recipe, stage, "v1", "e")


def test_root_params_yaml_matches_the_default_recipe():
    """`dvc repro` at the project root builds exactly the data `vlmforge run` builds."""
    params = yaml.safe_load((CONFIGS.parent / "params.yaml").read_text())
    assert params["data"] == load_recipe(CONFIGS / "tiny.yaml").data.stage_params()


def test_monitoring_settings_leave_a_stages_cache_key_alone():
    from components.recipe import stage_cache_key

    recipe = load_recipe(CONFIGS / "tiny.yaml")
    stage = recipe.stages_of("sft")[0]
    quiet = stage.model_copy(update={"train": stage.train.model_copy(
        update={"eval_every": 0, "checkpoint_every": 0})})
    loud = stage.model_copy(update={"train": stage.train.model_copy(
        update={"eval_every": 7, "checkpoint_every": 3, "keep_checkpoints": 5})})
    key = stage_cache_key(recipe, quiet, "3", "data1")
    assert key == stage_cache_key(recipe, loud, "3", "data1")
    slower = stage.model_copy(update={"train": stage.train.model_copy(update={"lr": 1e-5})})
    assert key != stage_cache_key(recipe, slower, "3", "data1")


def test_a_stage_has_only_the_options_of_its_kind():
    from components.recipe import AlignStage, PretrainStage, SftStage, parse_stage

    base = dict(name="s", longest_edge=32, unfreeze={"text": "full"})
    assert type(parse_stage(dict(base, kind="pretrain", sources=["scenes_vqa"]))) is PretrainStage
    assert type(parse_stage(dict(base, kind="sft", sources=["scenes_vqa"]))) is SftStage
    assert type(parse_stage(dict(base, kind="align", sources=["preference"]))) is AlignStage
    for kind, sources, option in (("pretrain", ["scenes_vqa"], {"beta": 0.2}),
                                  ("sft", ["scenes_vqa"], {"ground_connector": {}}),
                                  ("align", ["preference"], {"packing": True}),
                                  ("align", ["preference"], {"text_ratio": 0.2})):
        with pytest.raises(ValidationError, match=f"{kind}.{next(iter(option))}"):
            parse_stage(dict(base, kind=kind, sources=sources, **option))
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        parse_stage(dict(base, kind="distill", sources=["scenes_vqa"]))


def test_sample_averaged_loss_is_for_unpacked_supervised_stages():
    from components.recipe import parse_stage

    base = dict(name="s", longest_edge=32, unfreeze={"text": "full"})
    stage = parse_stage(dict(base, kind="sft", sources=["scenes_vqa"], loss_average="sample"))
    assert stage.loss_average == "sample"
    with pytest.raises(ValueError, match="unpacked"):
        parse_stage(dict(base, kind="sft", sources=["scenes_vqa"], loss_average="sample", packing=True))


def test_mlflow_params_show_every_stage_field():
    """The dump (what MLflow logs) hides nothing at its default; only the cache key's view
    leaves later fields out."""
    from components.recipe import AlignStage, PretrainStage, TrainSettings, parse_stage

    stage = parse_stage(dict(name="s", kind="pretrain", longest_edge=32, sources=["scenes_vqa"],
                             unfreeze={"text": "full"}))
    dumped = stage.model_dump(mode="json")
    assert set(dumped) == set(PretrainStage.model_fields)
    assert {"loss_average", "split_turns", "mixture", "lora_rank"} <= set(dumped)
    assert set(dumped["train"]) == set(TrainSettings.model_fields)
    assert {"rejected_from", "loss", "beta"} <= set(AlignStage.model_fields)
    assert "schedule" in dumped["train"]


def test_a_later_field_changes_the_key_only_when_set():
    from components.recipe import parse_stage, stage_cache_key

    recipe = load_recipe(CONFIGS / "micro.yaml")
    base = recipe.stages[0].model_dump(mode="json")

    def key(**change):
        return stage_cache_key(recipe, parse_stage({**base, **change}), "p", "d")

    assert key() == key(split_turns=False, lora_rank=8, loss_average="token")
    for change in ({"split_turns": True}, {"lora_rank": 4}, {"loss_average": "sample"},
                   {"train": {**base["train"], "schedule": "wsd"}}):
        assert key(**change) != key(), change


def test_backbones_always_take_gradient_steps():
    from components.recipe import Backbones

    with pytest.raises(ValueError, match="backbones.text.train.steps"):
        Backbones(text={"train": {"steps": 0}})


def test_align_accepts_any_preference_data_and_model_rejections_where_they_apply():
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw["data"]["datasets"] = {"rlaif": {"format": "trl-preference", "source": "prefs.jsonl"},
                               "coco": {"format": "coco-captions", "source": "captions.json"}}
    align = raw["stages"][-1]
    for sources in (["preference_hallucination"], ["rlaif"], ["preference", "rlaif"]):
        raw["stages"][-1] = {**align, "sources": sources}
        assert Recipe.model_validate(raw).stages[-1].sources == sources
    raw["stages"][-1] = {**align, "sources": ["coco"]}
    with pytest.raises(ValidationError, match=r"align trains on preference data .*\['coco'\]"):
        Recipe.model_validate(raw)
    raw["stages"][-1] = {**align, "sources": ["preference_hallucination"], "rejected_from": "model"}
    with pytest.raises(ValidationError, match="only the synthetic 'preference' source"):
        Recipe.model_validate(raw)


def test_align_replays_supervised_sources_only_and_keys_the_replay_when_set():
    from components.recipe import stage_cache_key

    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    align = raw["stages"][-1]

    def key(**replay) -> str:
        raw["stages"][-1] = {**align, "replay": replay} if replay else align
        recipe = Recipe.model_validate(raw)
        return stage_cache_key(recipe, recipe.stages[-1], "p", "d")

    raw["stages"][-1] = {**align, "replay": {"sources": ["scenes_vqa"]}}
    replay = Recipe.model_validate(raw).stages[-1].replay
    assert (replay.sources, replay.batch_size, replay.weight, replay.split_turns) == (
        ["scenes_vqa"], 8, 1.0, False)
    assert key() != key(sources=["scenes_vqa"])
    assert key(sources=["scenes_vqa"]) == key(sources=["scenes_vqa"], split_turns=False)
    assert key(sources=["scenes_vqa"]) != key(sources=["scenes_vqa"], split_turns=True)
    for sources in (["preference"], ["nonesuch"]):
        raw["stages"][-1] = {**align, "replay": {"sources": sources}}
        with pytest.raises(ValidationError, match=rf"replay sources must be .*\['{sources[0]}'\]"):
            Recipe.model_validate(raw)
    raw["stages"][-1] = {**align, "replay": {"sources": []}}
    with pytest.raises(ValidationError, match="replay.sources"):
        Recipe.model_validate(raw)


def test_memory_controls_key_what_changes_the_result_and_nothing_else():
    """dtype changes the weights: keyed when set. Gradient checkpointing and the reference's
    source change only how the same numbers are computed: never keyed."""
    from components.recipe import parse_stage, stage_cache_key

    recipe = load_recipe(CONFIGS / "micro.yaml")
    base = recipe.stages_of("align")[0].model_dump(mode="json")

    def key(**change):
        return stage_cache_key(recipe, parse_stage({**base, **change}), "p", "d")

    assert key() == key(dtype="fp32", gradient_checkpointing=False, reference="copy")
    assert key() == key(gradient_checkpointing=True, reference="cached")
    assert key(dtype="bf16") != key()
    with pytest.raises(ValidationError, match="dtype"):
        parse_stage({**base, "dtype": "fp16"})


def test_the_reference_without_a_second_model_is_refused_where_it_cannot_be_the_parent():
    from components.recipe import parse_stage

    base = dict(name="a", kind="align", longest_edge=32, sources=["preference"])
    lora = {"vision": "frozen", "connector": "frozen", "text": "lora"}
    assert parse_stage(dict(base, unfreeze=lora, reference="adapters")).reference == "adapters"
    for unfreeze in ({**lora, "connector": "full"}, {**lora, "text": "frozen"}):
        with pytest.raises(ValidationError, match="reference: adapters needs a LoRA policy"):
            parse_stage(dict(base, unfreeze=unfreeze, reference="adapters"))
    for reference in ("cached", "adapters"):
        with pytest.raises(ValidationError, match="rejected_from: model .* needs reference: copy"):
            parse_stage(dict(base, unfreeze=lora, reference=reference, rejected_from="model"))
