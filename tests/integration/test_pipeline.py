"""The whole pipeline at micro size: a real Prefect flow run, a real MLflow store and
registry, a real DVC repo and a real great_expectations validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import registry
from components.recipe import load_recipe
from flows.environment import vlmforge_home
from flows.pipeline import pipeline
from flows.stages.data import DataStageError, _dvc

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def runs():
    recipe = load_recipe(CONFIGS / "micro.yaml")
    registry.configure(vlmforge_home())
    first = pipeline(recipe)
    second = pipeline(recipe)
    return recipe, first, second


def test_a_version_per_training_stage_with_tags_and_parent_links(runs):
    recipe, first, _ = runs
    assert [s.stage for s in first.stages] == [s.name for s in recipe.stages]
    parent = None
    for outcome in first.stages:
        info = registry.version_info(recipe.registered_model, outcome.version)
        tags = info["tags"]
        assert tags["stage"] == outcome.stage
        assert tags["data_version"] == first.data.version
        assert tags["git_sha"]
        if parent is None:
            assert tags["parent_version"].startswith("backbones:vision-micro=")
        else:
            assert tags["parent_version"] == parent
        parent = outcome.version
        run = registry.get_run(info["run_id"])
        assert run["parent_run_id"] == first.run_id
        assert run["status"] == "FINISHED"
        assert "heldout_vqa_accuracy" in run["metrics"] and "loss" in run["metrics"]


def test_every_vlm_version_has_a_model_card_and_every_stage_a_prefect_report(runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from registry.tracking import client as mlflow_client

    recipe, first, _ = runs
    for outcome in first.stages:
        card = registry.version_info(recipe.registered_model, outcome.version)["description"]
        assert card.startswith(f"# {recipe.registered_model} v{outcome.version}")
        assert f"`{first.data.version}`" in card and "trainable parameters" in card
    final = registry.version_info(recipe.registered_model, first.stages[-1].version)
    assert "| vqa_accuracy |" in final["description"]  # the evaluated version's scores
    artifacts = mlflow_client().list_artifacts(final["run_id"])
    assert "model_card.md" in {a.path for a in artifacts}
    keys = [f"{recipe.name}-pretrain", f"{recipe.name}-sft", f"{recipe.name}-align",
            f"pipeline-{recipe.name}"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)
    assert all(a.type == "markdown" and first.stages[0].run_id[:12] in a.data
               for a in found if a.key == f"{recipe.name}-pretrain")
    progress_key = f"{recipe.name}-{recipe.stages[0].name}-progress"
    with get_client(sync_client=True) as client:
        bars = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[progress_key])))
    assert bars and bars[0].type == "progress" and float(bars[0].data) == 100.0


def test_backbones_are_registered_models_of_their_own(runs):
    _, first, _ = runs
    assert {b.name for b in first.backbones} == {"vision-micro", "lm-micro"}
    for b in first.backbones:
        assert registry.version_info(b.name, b.version)["tags"]["stage"] == "backbones"


def test_loss_decreased_in_the_first_stage(runs):
    _, first, _ = runs
    metrics = first.stages[0].metrics
    assert metrics["loss_last"] < metrics["loss_first"]


def test_first_run_promotes_the_final_version_to_champion(runs):
    recipe, first, _ = runs
    final = first.stages[-1].version
    assert registry.get_alias(recipe.registered_model, "champion") == final
    recorded = registry.read_metrics(recipe.registered_model, final)
    assert {"vqa_accuracy", "vqa_colour_accuracy", "vqa_existence_accuracy", "ocr_accuracy",
            "caption_cider", "existence_hallucination_rate"} <= set(recorded)
    assert recorded == pytest.approx(first.evaluation.metrics)
    summary = first.summary(recipe.registered_model)
    assert f"models:/{recipe.registered_model}@champion -> version {final}" in summary
    assert "vlmforge ui" in summary


def test_evaluate_scores_every_stage_version_and_compares_sft_with_aligned(runs):
    recipe, first, second = runs
    comparison = first.comparison
    assert comparison.versions == {s.stage: s.version for s in first.stages}
    sft, align = recipe.stages_of("sft")[0].name, recipe.stages_of("align")[0].name
    for stage, version in comparison.versions.items():  # each version carries its own scores
        recorded = registry.read_metrics(recipe.registered_model, version)
        assert recorded["hallucination_rate"] == pytest.approx(comparison.metrics[stage]["hallucination_rate"])
    checks = comparison.checks
    assert checks["align_hallucination_before"] == comparison.metrics[sft]["hallucination_rate"]
    assert checks["align_hallucination_after"] == comparison.metrics[align]["hallucination_rate"]
    assert checks["align_vqa_drop_points"] == pytest.approx(
        100 * (comparison.metrics[sft]["vqa_accuracy"] - comparison.metrics[align]["vqa_accuracy"]))
    before = recipe.previous_stage(recipe.stages_of("sft")[0]).name
    assert checks["sft_text_accuracy_before"] == comparison.metrics[before]["text_accuracy"]
    assert checks["sft_text_answer_nll_after"] == comparison.metrics[sft]["text_answer_nll"] > 0
    run = registry.get_run(comparison.run_id)
    assert run["parent_run_id"] == first.run_id
    assert run["metrics"][f"{align}.hallucination_rate"] == checks["align_hallucination_after"]
    assert "align_vqa_drop_points" in registry.get_run(first.run_id)["metrics"]
    assert "every stage on the held-out test split" in first.summary(recipe.registered_model)
    for stage, metrics in second.comparison.metrics.items():  # reused, not rerun
        assert metrics == pytest.approx(comparison.metrics[stage])


def test_unchanged_rerun_reuses_data_and_every_stage(runs):
    _, first, second = runs
    assert second.data.version == first.data.version
    assert all(b.cached for b in second.backbones)
    assert all(s.cached for s in second.stages)
    assert [s.version for s in second.stages] == [s.version for s in first.stages]
    assert second.evaluation.cached
    lock = Path(second.data.workspace) / "dvc.lock"
    assert json.dumps(first.data.hashes) == json.dumps(second.data.hashes) and lock.exists()


def test_champion_loads_with_plain_transformers_in_a_fresh_process(runs):
    recipe, first, _ = runs
    path = registry.hf_model_dir(recipe.registered_model, registry.get_alias(recipe.registered_model,
                                                                             "champion"))
    code = f"""
import sys
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained({str(path)!r})
processor = AutoProcessor.from_pretrained({str(path)!r})
image = Image.new("RGB", (64, 64), "white")
ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill=(220, 30, 30))
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What colour is the circle?"}}]}}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=[text], images=[[image]], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
answer = processor.batch_decode(out[:, inputs.input_ids.shape[1]:], skip_special_tokens=True)[0]
assert not {{"components", "flows", "registry"}} & set(sys.modules)
print("ANSWER", repr(answer))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ANSWER" in out.stdout


def test_a_failed_expectation_stops_the_data_stage_naming_it(runs, tmp_path):
    _, first, _ = runs
    ws = tmp_path / "ws"
    shutil.copytree(first.data.workspace, ws)
    manifest = ws / "data" / "shards" / "manifests" / "train.jsonl"
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows + [rows[0]]) + "\n")  # a duplicate key
    with pytest.raises(DataStageError) as err:
        _dvc(ws, "repro", "--single-item", "validate")
    message = str(err.value)
    assert "expect_column_values_to_be_unique(key)" in message
    assert json.loads(rows[0])["key"] in message
