"""Per-stage mixtures: the recipe's `mixture` validates; the loader draws sources by weight."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.recipe import Recipe, fingerprint, load_recipe, parse_stage
from components.training.data_stream import MixtureSamples, SampleStream, sample_stream

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
SOURCES = ("scenes_vqa", "ocr", "text")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix-shards")
    for source in SOURCES:
        write_shard(generate_samples(source, 0, "train", 0, 24, image_size=32),
                    root / "train" / f"{source}-0000.tar")
    return root


def _stage(**kw):
    base = dict(name="s", kind="pretrain", longest_edge=32, unfreeze={"connector": "full"})
    return parse_stage({**base, **kw})


def test_realised_counts_follow_the_weights(shards):
    weights = {"scenes_vqa": 3.0, "ocr": 1.0, "text": 1.0}
    stream = sample_stream(shards, list(weights), seed=0, mixture=weights)
    assert isinstance(stream, MixtureSamples)
    n = 1500
    drawn = Counter(s.record["source"] for s in itertools.islice(stream, n))
    assert drawn == Counter(stream.counts)  # the counts are what the loader yielded
    for source, w in weights.items():
        assert abs(drawn[source] / n - w / 5) < 0.05, drawn


def test_draws_are_deterministic_by_seed(shards):
    weights = {"scenes_vqa": 1.0, "ocr": 2.0}

    def keys(seed: int) -> list[str]:
        return [s.key for s in itertools.islice(sample_stream(shards, [], seed, mixture=weights), 60)]

    assert keys(3) == keys(3)
    assert keys(3) != keys(4)


def test_without_a_mixture_the_stream_is_unchanged(shards):
    natural = sample_stream(shards, ["scenes_vqa", "ocr"], seed=0)
    assert isinstance(natural, SampleStream)
    reference = SampleStream(sorted((shards / "train").glob("scenes_vqa-*.tar"))
                             + sorted((shards / "train").glob("ocr-*.tar")), seed=0)
    first = [s.key for s in itertools.islice(natural, 30)]
    assert first == [s.key for s in itertools.islice(reference, 30)]


def test_loader_rejects_bad_weights_and_text_ratio(shards):
    with pytest.raises(ValueError, match="> 0"):
        MixtureSamples({"a": [], "b": []}, {"a": 1.0, "b": 0.0}, seed=0)
    with pytest.raises(ValueError, match="text_ratio"):
        sample_stream(shards, ["scenes_vqa", "text"], 0, text_ratio=0.2, mixture={"text": 1.0})
    with pytest.raises(FileNotFoundError, match="preference"):
        sample_stream(shards, [], 0, mixture={"preference": 1.0})


def test_a_mixture_replaces_sources():
    stage = _stage(mixture={"scenes_vqa": 2, "ocr": 1})
    assert stage.sources == ["scenes_vqa", "ocr"] and stage.mixture == {"scenes_vqa": 2.0, "ocr": 1.0}
    assert parse_stage(stage.model_dump(mode="json")) == stage  # round trip (Prefect)


@pytest.mark.parametrize("kw, error", [
    ({"mixture": {"scenes_vqa": 1, "ocr": 0}}, "weights must be > 0"),
    ({"mixture": {"scenes_vqa": 1, "ocr": -2}}, "weights must be > 0"),
    ({"mixture": {"scenes_vqa": 1}, "sources": ["ocr"]}, "mixture replaces sources"),
    ({"mixture": {"scenes_vqa": 1, "text": 1}, "text_ratio": 0.3}, "not text_ratio"),
    ({}, "sources"),
])
def test_invalid_mixtures_are_named(kw, error):
    with pytest.raises(ValidationError, match=error):
        _stage(**kw)


@pytest.mark.parametrize("stage, error", [
    ({"mixture": {"scenes_vqa": 1, "photos": 1}}, r"unknown sources \['photos'\]"),
    ({"mixture": {"scenes_vqa": 1}, "kind": "align"}, "align trains on preference data"),
])
def test_a_recipe_names_what_its_sources_lack(stage, error):
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw["stages"] = [{**raw["stages"][-1], **stage}]
    del raw["stages"][0]["sources"]
    with pytest.raises(ValidationError, match=error):
        Recipe.model_validate(raw)


def test_recipes_round_trip_through_their_dump():
    recipe = load_recipe(CONFIGS / "tiny.yaml")
    raw = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    for stage, section in zip(recipe.stages, raw["stages"], strict=True):
        assert stage.mixture is None and stage.sources == section["sources"]
    assert fingerprint(Recipe.model_validate(recipe.model_dump(mode="json"))) == fingerprint(recipe)


def test_a_recipe_declares_a_mixture_per_stage(tmp_path):
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    del raw["stages"][1]["sources"]
    raw["stages"][1]["mixture"] = {"scenes_caption": 1, "scenes_vqa": 2, "ocr": 1}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    stage = load_recipe(path).stages[1]
    assert stage.longest_edge == 64 and stage.mixture["scenes_vqa"] == 2.0
    assert stage.sources == ["scenes_caption", "scenes_vqa", "ocr"]

