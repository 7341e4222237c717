"""The tiny recipes' schedules through the platform's own stage runner (run_stage) on real
shards: the Flamingo recipe leaves the LM bit-identical, each recipe's loss falls.

The full recipes (data, backbones, pretraining) run end to end in the slow test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.model.build import assemble, processor_for
from components.model.freeze import apply_unfreezing, merge_lora
from components.recipe import load_recipe
from components.training.stage import run_stage
from tests.components.model.helpers import model_spec, saved_backbones

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-shards")
    for source in ("scenes_caption", "scenes_vqa", "text"):
        write_shard(generate_samples(source, 0, "train", 0, 48, image_size=64),
                    root / "train" / f"{source}-0000.tar")
    return root


def _mean(history, part):
    losses = [h["loss"] for h in history]
    k = max(1, len(losses) // 3)
    return sum(losses[:k]) / k if part == "first" else sum(losses[-k:]) / k


@pytest.mark.parametrize(("recipe_name", "index"), [("tiny-flamingo", 0), ("tiny-llava", 1)])
def test_tiny_recipe_schedule_trains_micro_model(recipe_name, index, tokenizer, shards, tmp_path):
    recipe = load_recipe(ROOT / "configs" / f"{recipe_name}.yaml")
    arch = recipe.model.architecture
    vision, lm = saved_backbones(arch, len(tokenizer), tmp_path)
    lm_before = {k: v.clone() for k, v in lm.state_dict().items()}
    model = assemble(model_spec(arch, cross_layer_interval=2, use_resampler=recipe.model.use_resampler),
                     vision, lm, tokenizer, seed=0)
    stage = recipe.stages[index]  # tiny-llava: its first stage with gradient steps
    stage = stage.model_copy(update={"train": stage.train.model_copy(update={
        "steps": 20, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "log_every": 1})})
    apply_unfreezing(model, stage.unfreeze, lora_rank=stage.lora_rank)
    run = run_stage(model, processor_for(model, tokenizer, stage.longest_edge), stage, shards,
                    seed=0, max_length=256)
    assert _mean(run.result.history, "last") < _mean(run.result.history, "first")
    merge_lora(model)
    if arch == "idefics":  # Flamingo: the frozen LM comes out bit for bit
        state = model.state_dict()
        for k, v in lm_before.items():
            assert torch.equal(state[k], v), k


METRICS = """
import json, sys
import registry
from flows.environment import configure_environment
registry.configure(configure_environment())
print(json.dumps({r: registry.get_run(r)["metrics"] for r in sys.argv[1:]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["tiny-llava", "tiny-flamingo"])
def test_tiny_recipe_pretraining_end_to_end(recipe_name, tmp_path):
    """data -> backbones -> pretrain stages with the CLI, in a fresh VLMFORGE_HOME; every
    pretraining stage registers a model and its loss falls (a connector-only stage: its fit
    explains most of the held-out targets)."""
    env = dict(os.environ, VLMFORGE_HOME=str(tmp_path / "home"))
    out = ""
    for command in ("data", "backbones", "pretrain"):
        out = subprocess.run([sys.executable, "-m", "flows.cli", command, "--recipe",
                              f"configs/{recipe_name}.yaml"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
    recipe = load_recipe(ROOT / "configs" / f"{recipe_name}.yaml")
    runs = re.findall(r"^\S+: \S+ v\d+.* run ([0-9a-f]{32})$", out, flags=re.MULTILINE)
    assert len(runs) == len(recipe.stages_of("pretrain")), out
    metrics = json.loads(subprocess.run([sys.executable, "-c", METRICS, *runs], cwd=ROOT, env=env,
                                        check=True, capture_output=True, text=True).stdout)
    for stage, run_id in zip(recipe.stages_of("pretrain"), runs, strict=True):
        m = metrics[run_id]
        if stage.train.steps == 0:  # a connector-only stage: fitted in closed form, no loss
            assert m["ground_heldout_r2"] > 0.5, (stage.name, m)
        else:
            assert m["loss_last"] < m["loss_first"], (stage.name, m)
