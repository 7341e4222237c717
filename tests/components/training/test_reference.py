"""An align stage's reference without a second model: log-probs cached before training, or the
LoRA policy with its adapters off, give the DPO losses of a copied reference, and no copy of
the model is made; the cache is filled once per reference model and data and then reused."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import components.training.stage as stage_module
from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.freeze import apply_unfreezing
from components.recipe import parse_stage
from components.training.reference import ReferenceCache
from components.training.stage import run_stage

SCHEDULES = {"full": {"vision": "frozen", "connector": "full", "text": "full"},
             "lora": {"vision": "frozen", "connector": "frozen", "text": "lora"}}
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference-shards")
    for split, n in (("train", 24), ("val", 8)):
        write_shard(generate_samples("preference", 0, split, 0, n, image_size=32),
                    root / split / "preference-0000.tar")
    return root


def align(schedule: str, reference: str, **train):
    return parse_stage(dict(name="a", kind="align", longest_edge=32, sources=["preference"],
                            unfreeze=SCHEDULES[schedule], lora_rank=4, reference=reference,
                            loss="sigmoid_sft", beta=0.5,
                            train={"steps": 3, "batch_size": 2, "log_every": 1, "warmup_steps": 1,
                                   "lr": 1e-2, **train}))


def run(backbones, tokenizer, shards, stage, **kwargs):
    """The stage on a fresh model (the same weights every time), its logged rows."""
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    apply_unfreezing(model, stage.unfreeze, lora_rank=stage.lora_rank)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return run_stage(model, processor, stage, shards, seed=0, max_length=256, **kwargs)


def no_model_copies(monkeypatch) -> list[str]:
    """Make the stage module's deep copies of a model fail the test (other copies pass)."""
    copied: list[str] = []

    def deepcopy(obj, *args):
        if isinstance(obj, nn.Module):
            copied.append(type(obj).__name__)
        return copy.deepcopy(obj, *args)

    monkeypatch.setattr(stage_module, "copy", SimpleNamespace(deepcopy=deepcopy))
    return copied


@pytest.mark.parametrize("schedule,reference", [("full", "cached"), ("lora", "cached"),
                                                ("lora", "adapters")])
def test_the_reference_without_a_copy_gives_the_losses_of_a_copied_one(
        backbones, tokenizer, shards, schedule, reference, monkeypatch):
    copied = run(backbones, tokenizer, shards, align(schedule, "copy")).result.history
    made = no_model_copies(monkeypatch)
    ours = run(backbones, tokenizer, shards, align(schedule, reference)).result.history
    assert made == []  # no second model
    assert len(ours) == len(copied) == 3
    for row, expected in zip(ours, copied, strict=True):
        for name in METRICS:
            assert row[name] == pytest.approx(expected[name], abs=1e-5), name
    assert copied[-1]["rewards/margins"] != 0  # the policy moved away from its reference


def test_the_cache_is_filled_once_and_serves_the_validation_probe_too(
        backbones, tokenizer, shards, tmp_path, monkeypatch):
    path = tmp_path / "reference.json"
    computed: list[int] = []
    fill = ReferenceCache.fill

    def counting(self, model, batches):
        computed.append(fill(self, model, batches))
        return computed[-1]

    monkeypatch.setattr(ReferenceCache, "fill", counting)
    stage = align("lora", "cached", eval_every=3)
    first = run(backbones, tokenizer, shards, stage, reference_file=path)
    rows = json.loads(path.read_text())
    assert computed == [3 * 2 * 2, 2 * 2 * 2]  # the training rows, then the probe's 2 batches
    assert len(rows) == sum(computed) and all(v < 0 for v in rows.values())
    assert "val_rewards/margins" in first.result.evals[0]

    computed.clear()  # another beta, same reference model and data: nothing to compute
    again = run(backbones, tokenizer, shards, stage.model_copy(update={"beta": 0.1}),
                reference_file=path)
    assert computed == [0, 0]
    assert again.result.history[-1]["loss"] != first.result.history[-1]["loss"]  # beta counts


def test_a_batch_the_cache_never_saw_is_named_not_guessed():
    cache = ReferenceCache()
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.ones(2, 3, dtype=torch.long)}
    with pytest.raises(KeyError, match="2 of 2 rows of a batch have no cached reference"):
        cache.attach(batch)
