"""Every architecture a recipe can name either does a feature or is refused at load time:
packing (packed loss = unpacked loss), image splitting (rising resolution), resume from a
checkpoint (the same final loss as an uninterrupted run) and the held-out suite. Serving is
tested behind the real server in tests/registry/test_serving.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.model.architectures import ARCHITECTURES, spec
from components.model.chat import ChatEncoder, collate
from components.model.freeze import apply_unfreezing
from components.recipe import Recipe, parse_stage
from components.training.objectives import lm_objective
from components.training.packing import collate_packed, packed_lm_objective
from components.training.stage import run_stage
from tests.components.model.helpers import SCHEDULES, build

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PACKING = [a for a in ARCHITECTURES if spec(a).supports.packing]
SPLITTING = [a for a in ARCHITECTURES if spec(a).supports.splitting]


def _recipe(arch: str, **stage) -> dict:
    raw = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    raw["model"] = {"architecture": arch, "max_length": 160}
    raw["stages"] = [{"name": "s", "kind": "sft", "longest_edge": 32, "sources": ["scenes_vqa"],
                      "unfreeze": SCHEDULES[arch], **stage}]
    return raw


def _chat(question: str, answer: str, images: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packing_works_or_the_recipe_is_refused(arch, tokenizer, tmp_path):
    if arch not in PACKING:
        with pytest.raises(ValueError, match=f"packing is not supported by architecture '{arch}'"):
            Recipe.model_validate(_recipe(arch, packing=True))
        return
    Recipe.model_validate(_recipe(arch, packing=True))
    _, _, model, processor = build(arch, tokenizer, tmp_path)
    encoder = ChatEncoder(processor, max_length=256)
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    convs = [encoder.encode(_chat("What colour is the circle?", "red", 1), [red]),
             encoder.encode(_chat("What is 2 + 2?", "4", 0), []),
             encoder.encode(_chat("Describe the image.", "a blue square", 1), [blue]),
             encoder.encode(_chat("Colour?", "blue", 1), [blue])]
    packed = collate_packed([[convs[0], convs[1]], [convs[2], convs[3]]], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(packed_lm_objective(model, packed)[0],
                                   lm_objective(model, collate(convs, tokenizer.pad_token_id))[0],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_rising_resolution_works_or_the_recipe_is_refused(arch, tokenizer, tmp_path):
    raw = _recipe(arch)
    raw["stages"] = [{**raw["stages"][0], "name": "low", "kind": "pretrain"},
                     {**raw["stages"][0], "name": "high", "longest_edge": 64}]
    if arch not in SPLITTING:
        with pytest.raises(ValueError, match=f"architecture '{arch}' has no image splitting"):
            Recipe.model_validate(raw)
        return
    Recipe.model_validate(raw)
    _, _, model, low = build(arch, tokenizer, tmp_path, longest_edge=32)
    from components.model.build import processor_for

    high = processor_for(model, tokenizer, 64)
    image = Image.new("RGB", (64, 64), "red")
    tokens = {name: ChatEncoder(p, 512).prompt(_chat("Colour?", "", 1)[:1], [image]).input_ids
              for name, p in (("low", low), ("high", high))}
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert tokens["high"].count(image_id) > tokens["low"].count(image_id)  # more views: more tokens


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity-shards")
    for split in ("train", "test"):
        write_shard(generate_samples("scenes_vqa", 0, split, 0, 16, image_size=32),
                    root / split / "scenes_vqa-0000.tar")
    return root


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_stage_resumes_from_its_checkpoint_on_every_architecture(arch, tokenizer, shards, tmp_path):
    """6 steps with a checkpoint every 2: a rerun given only the step-4 checkpoint ends with the
    uninterrupted run's final loss."""
    stage = parse_stage({"name": "s", "kind": "sft", "longest_edge": 32, "sources": ["scenes_vqa"],
                         "unfreeze": SCHEDULES[arch],
                         "train": {"steps": 6, "batch_size": 2, "log_every": 1, "warmup_steps": 1,
                                   "checkpoint_every": 2}})

    def run(ckpt: Path):
        _, _, model, processor = build(arch, tokenizer, tmp_path / "b")
        apply_unfreezing(model, stage.unfreeze, lora_rank=stage.lora_rank)
        return run_stage(model, processor, stage, shards, seed=0, max_length=256,
                         checkpoint_dir=ckpt).result

    full = run(tmp_path / "full")
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "step-00000004", resumed_dir / "step-00000004")
    resumed = run(resumed_dir)
    assert resumed.resumed_from == 4
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_held_out_suite_runs_on_every_architecture(arch, tokenizer, shards, tmp_path):
    from components.data.shards import read_samples
    from components.evaluation.synthetic_suite import evaluate_suite

    _, _, model, processor = build(arch, tokenizer, tmp_path)
    samples = list(read_samples(sorted((shards / "test").glob("*.tar"))))[:4]
    suite = evaluate_suite(model.eval(), ChatEncoder(processor, 256), samples, max_new_tokens=4)
    assert len(suite.rows) == len(samples) and 0 <= suite.metrics["vqa_accuracy"] <= 1
