"""Bring your own data, at micro size: a VQAv2 folder and a COCO-captions folder (exported in
those public layouts, one image broken) train the micro model through a recipe that names them
under `data.datasets`; official-format suites score it and the gate promotes on the official
VQA accuracy; a second run reuses the ingest and every stage; the versions carry the datasets'
content hashes. configs/byod-example.yaml is the same recipe at the tiny recipe's size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import registry
from components.data.export import export_coco_captions, export_vqav2
from components.recipe import Recipe
from flows.environment import vlmforge_home
from flows.pipeline import pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def micro_byod_recipe(root: Path) -> dict:
    """configs/byod-example.yaml at micro size, on the folders under ``root``."""
    raw = yaml.safe_load((CONFIGS / "byod-example.yaml").read_text())
    micro = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw.update(name="byod-micro", registered_model="vlm-byod-micro")
    raw["data"].update(vocab_size=512, shard_size=64)
    for spec in raw["data"]["datasets"].values():
        spec["source"] = str(root / spec["source"].removeprefix("data/byod/"))
        spec["images"] = str(root / spec["images"].removeprefix("data/byod/"))
        spec["split"] = {"train": 0.7, "val": 0.1, "test": 0.2}
    raw["data"]["datasets"]["shapes_captions"]["max_quarantine_rate"] = 0.25
    raw["backbones"] = micro["backbones"]
    raw["backbones"]["vision"]["registered_model"] = "vision-byod-micro"
    raw["backbones"]["text"]["registered_model"] = "lm-byod-micro"
    raw["model"] = {**micro["model"], "vision": "registered:vision-byod-micro",
                    "text": "registered:lm-byod-micro"}
    for stage in raw["stages"]:
        stage["train"] = {"steps": 3, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 1, "log_every": 1}
    for suite in raw["evaluate"]["suites"].values():
        for key in ("questions", "annotations", "images"):
            if key in suite:
                suite[key] = str(root / suite[key].removeprefix("data/byod/"))
    raw["evaluate"].update(max_new_tokens=6, samples_to_log=4)
    return raw


@pytest.fixture(scope="module")
def byod(tmp_path_factory):
    root = tmp_path_factory.mktemp("byod")
    export_vqav2("scenes_vqa", 24, root / "vqav2", seed=1)
    export_coco_captions("scenes_caption", 12, root / "coco", seed=1)
    export_vqav2("scenes_vqa", 6, root / "vqav2-val", seed=2, subset="val2014")
    export_coco_captions("scenes_caption", 4, root / "coco-val", seed=2, subset="val2014")
    broken = root / "coco" / "train2014" / "COCO_train2014_000000000003.jpg"
    broken.write_bytes(b"not a jpeg")  # its captions are quarantined, the rest trains
    recipe = Recipe.model_validate(micro_byod_recipe(root))
    registry.configure(vlmforge_home())
    first = pipeline(recipe)
    second = pipeline(recipe)
    return recipe, first, second


def test_the_datasets_train_every_stage_and_the_versions_carry_their_hashes(byod):
    recipe, first, _ = byod
    assert set(first.data.datasets) == {"shapes_vqa", "shapes_captions"}
    assert [s.stage for s in first.stages] == [s.name for s in recipe.stages]
    for outcome in first.stages:
        tags = registry.version_info(recipe.registered_model, outcome.version)["tags"]
        for name, digest in first.data.datasets.items():
            assert tags[f"dataset.{name}"] == digest
    counts = first.data.counts["train"]
    assert counts["vqa"] > 0 and counts["caption"] > 0


def test_each_dataset_is_a_dvc_stage_and_a_second_run_reuses_everything(byod):
    recipe, first, second = byod
    lock = yaml.safe_load((Path(first.data.workspace) / "dvc.lock").read_text())
    for name, spec in recipe.data.datasets.items():
        deps = {d["path"] for d in lock["stages"][f"ingest@{name}"]["deps"]}
        assert {spec.source, spec.images} <= deps  # the dataset's files are its dependencies
    assert second.data.version == first.data.version
    assert all(s.cached for s in second.stages) and second.evaluation.cached


def test_no_image_lands_in_two_splits_and_the_quarantine_is_logged(byod):
    from mlflow import MlflowClient

    from components.data.shards import read_samples, shard_paths

    _, first, _ = byod
    folder = Path(first.data.workspace) / "data" / "datasets" / "shapes_captions"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["read"] == summary["accepted"] + summary["quarantined"]
    assert summary["rules"] == {"image_decode": 4}  # the broken image's four captions
    images = {}
    for split in ("train", "val", "test"):
        samples = list(read_samples(shard_paths(first.data.shards, split, ["shapes_captions"]))
                       if summary["splits"][split] else [])
        assert all(s.record["source"] == "shapes_captions" for s in samples)
        images[split] = {s.record["image_id"] for s in samples}
    assert not (images["train"] & images["val"] or images["train"] & images["test"]
                or images["val"] & images["test"])
    client = MlflowClient()
    data_run = client.search_runs(
        [registry.get_run(first.run_id)["experiment_id"]],
        f"tags.mlflow.parentRunId = '{first.run_id}' and tags.stage = 'data'")[0]
    assert data_run.data.metrics["dataset_shapes_captions_quarantined"] == 4
    logged = {a.path for a in client.list_artifacts(data_run.info.run_id, "datasets/shapes_captions")}
    assert {"datasets/shapes_captions/summary.json",
            "datasets/shapes_captions/quarantine.jsonl"} <= logged


def test_official_suites_run_with_the_pipeline_and_gate_it(byod):
    recipe, first, _ = byod
    recorded = registry.read_metrics(recipe.registered_model, first.evaluation.version)
    assert {"vqa_val_accuracy", "captions_val_CIDEr"} <= set(recorded)
    assert 0 <= recorded["vqa_val_accuracy"] <= 100  # the official VQA accuracy, in percent
    assert set(first.evaluation.benchmarks) == {"vqa_val", "captions_val"}
    assert first.evaluation.champion == first.evaluation.version  # the first version is promoted


def test_lineage_both_ways(byod, capsys):
    from flows.cli import main
    from registry.lineage import data_lineage, version_lineage

    recipe, first, _ = byod
    final = first.evaluation.version
    lineage = version_lineage(recipe.registered_model, final)
    assert lineage["datasets"] == first.data.datasets and lineage["data_version"] == first.data.version
    assert [p["stage"] for p in lineage["parents"]] == [s.name for s in recipe.stages][:-1][::-1]
    assert set(lineage["backbones"]) == {"vision-byod-micro", "lm-byod-micro"}
    assert {"synthetic", "vqa_val", "captions_val"} <= set(lineage["scores"])
    assert "vqa_val_accuracy" in lineage["scores"]["vqa_val"]["metrics"]
    digest = first.data.datasets["shapes_vqa"]
    trained = {v["model"] for v in data_lineage(digest)}
    assert {f"models:/{recipe.registered_model}/{s.version}" for s in first.stages} <= trained
    assert main(["lineage", f"models:/{recipe.registered_model}/{final}"]) == 0
    out = capsys.readouterr().out
    assert f"dataset shapes_vqa: {digest}" in out and "scores of suite vqa_val" in out
    assert main(["lineage", "--data", digest[:10]]) == 0
    assert f"trained on data {digest[:10]}" in capsys.readouterr().out
