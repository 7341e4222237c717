"""The SmolVLM-256M-shaped model through the stage path a recipe uses: hub-layout backbone
folders with random weights (flows/bench/smolvlm_shape.py), configs/smolvlm-256m.yaml pointed at
them, and its pretrain and SFT stages (at the 512 px tile) plus an align stage, each a few
steps through the Prefect stage flows (`run_stage` inside), each registered in a real SQLite
MLflow store and started from the previous version; every version loads with plain
transformers. The memory controls ride along: gradient checkpointing in SFT, bf16 and the
cached reference in align. The real size is slow (minutes); `make test` runs the same shapes scaled down through
the calls the stage flow makes (build, `run_stage`, merge, save, reload as the next parent)
without Prefect and MLflow."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    Idefics3ForConditionalGeneration,
)

import registry
from components.data.version import DataVersion
from components.recipe import STAGE_KINDS
from flows.bench.smolvlm_shape import (
    REAL,
    RECIPE,
    TEST,
    TILE,
    local_recipe,
    write_backbones,
    write_shards,
)
from flows.environment import vlmforge_home
from flows.stages.training import QUICK_EVAL_SOURCES, STAGE_FLOWS

# through Prefect and MLflow (a temporary Prefect server and registration dominate the test
# size's minute): both slow; `make test` runs the scaled shapes through the same calls below
SCALES = [pytest.param(("test", TEST), id="test-size", marks=pytest.mark.slow),
          pytest.param(("real", REAL), id="real-size", marks=pytest.mark.slow)]
TRAIN = {"steps": 2, "batch_size": 1, "lr": 1.0e-4, "warmup_steps": 1, "log_every": 1}


def stages() -> list[dict]:
    """The recipe's first pretrain stage and its SFT stage at the 512 px tile (two steps of one
    sample each: the CPU's share), then an align stage with the memory controls."""
    own = {s["name"]: s for s in yaml.safe_load(RECIPE.read_text())["stages"]}
    pretrain = {**own["pretrain-512"], "train": TRAIN}
    sft = {**own["sft-1536"], "name": "sft-512", "longest_edge": TILE, "train": TRAIN,
           "gradient_checkpointing": True}
    align = {"name": "align-512", "kind": "align", "longest_edge": TILE, "sources": ["preference"],
             "unfreeze": {"vision": "frozen", "connector": "frozen", "text": "lora"}, "lora_rank": 8,
             "loss": "sigmoid_sft", "dtype": "bf16", "reference": "cached", "train": TRAIN}
    return [pretrain, sft, align]


@pytest.fixture(scope="module", params=SCALES)
def trained(request, tmp_path_factory):
    label, scale = request.param
    root = tmp_path_factory.mktemp(f"smolvlm-{label}")
    plan = stages()
    sources = sorted({s for stage in plan for s in stage["sources"]})
    shards = write_shards(root / "workspace" / "data" / "shards", {
        "train": dict.fromkeys(sources, 8),
        "test": dict.fromkeys(QUICK_EVAL_SOURCES, 2)})  # the held-out slice each stage scores
    vision, text = write_backbones(root / "hub", shards, scale)
    recipe = local_recipe(vision, text, plan, name=f"smolvlm-256m-{label}",
                          registered_model=f"vlm-smolvlm-256m-{label}",
                          model={"max_length": 512},
                          evaluate={"max_new_tokens": 4, "batch_size": 4, "samples_to_log": 2})
    data = DataVersion(str(root / "workspace"), f"local-{label}", {}, {})
    registry.configure(vlmforge_home())
    outcomes, previous = [], None
    for kind in STAGE_KINDS:
        outcomes += STAGE_FLOWS[kind](recipe, data, [], previous_version=previous)
        previous = outcomes[-1].version
    return label, recipe, outcomes


def test_every_stage_trains_and_registers_a_version_started_from_the_one_before(trained):
    _, recipe, outcomes = trained
    assert [o.stage for o in outcomes] == [s.name for s in recipe.stages]
    parent = "backbones:"
    for outcome in outcomes:
        assert not outcome.cached and outcome.trainable > 0
        tags = registry.version_info(recipe.registered_model, outcome.version)["tags"]
        assert tags["stage"] == outcome.stage and tags["parent_version"] == parent
        assert math.isfinite(outcome.metrics["loss_first"]) and math.isfinite(outcome.metrics["loss_last"])
        parent = outcome.version
    reference = list((vlmforge_home() / "checkpoints" / recipe.name).glob("align-512-reference-*.json"))
    assert len(reference) == 1  # the cached reference log-probs, kept beside the stage's files


def test_each_version_loads_with_plain_transformers_at_its_size(trained):
    label, recipe, outcomes = trained
    for outcome in outcomes:
        path = registry.hf_model_dir(recipe.registered_model, outcome.version)
        model = AutoModelForImageTextToText.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        assert isinstance(model, Idefics3ForConditionalGeneration)
        saved_as = torch.bfloat16 if outcome.kind == "align" else torch.float32
        assert model.config.dtype == saved_as  # the stage's dtype reached the saved weights
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        assert 220 < millions < 260 if label == "real" else millions < 20, millions
        assert processor.image_seq_len == 64  # pixel shuffle 4 of a 512 px tile
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    from PIL import Image

    inputs = processor(text=prompt, images=[[Image.new("RGB", (TILE, TILE), (200, 30, 30))]],
                       return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_the_scaled_shapes_take_every_stage_kind_through_run_stage_and_reload(tmp_path):
    """What `train_stage` does between the registry's load and its registration: each stage
    starts from the previous one's saved folder in its own dtype, and plain transformers loads
    the last."""
    from components.model.build import build_stage_model, save_vlm
    from components.model.freeze import merge_lora
    from components.training.stage import run_stage

    plan = stages()
    sources = sorted({s for stage in plan for s in stage["sources"]})
    shards = write_shards(tmp_path / "shards", {"train": dict.fromkeys(sources, 4)})
    vision, text = write_backbones(tmp_path / "hub", shards, TEST)
    recipe = local_recipe(vision, text, plan, model={"max_length": 512})
    parent = None
    for stage in recipe.stages:
        model, processor, counts = build_stage_model(
            recipe.model, seed=0, parent_dir=parent, registered={}, longest_edge=stage.longest_edge,
            unfreeze=stage.unfreeze, lora_rank=stage.lora_rank, dtype=stage.dtype)
        run = run_stage(model, processor, stage, shards, seed=0, max_length=recipe.model.max_length,
                        reference_file=tmp_path / f"{stage.name}-reference.json")
        assert run.result.steps == 2 and run.skipped == 0
        assert all(math.isfinite(h["loss"]) for h in run.result.history)
        parent = save_vlm(merge_lora(model), processor, tmp_path / stage.name)
    assert (tmp_path / "align-512-reference.json").is_file()
    model = AutoModelForImageTextToText.from_pretrained(parent)
    assert isinstance(model, Idefics3ForConditionalGeneration) and model.dtype == torch.bfloat16
    assert model.config.text_config.vocab_size == 49152  # SmolLM2's vocabulary, kept
    assert AutoProcessor.from_pretrained(parent).image_seq_len == 64
