"""A frozen vision tower serves repeated images from its cache and changes nothing else: the
same loss and gradients in every architecture, fewer images through the tower; every model
holding the same tower (a copy, a saved and reloaded version) shares the store; a tower that
trains, or a cache without room, computes every image as before."""

from __future__ import annotations

import copy

import pytest
import torch

from components.model.build import load_vlm, save_vlm
from components.model.freeze import apply_unfreezing
from components.training.stage import run_stage
from components.training.tower_cache import budget_bytes, cached_tower, clear_shared, vision_tower
from tests.components.model.helpers import SCHEDULES, build, colour_batch
from tests.components.training.test_activations import loss_and_grads
from tests.components.training.test_stage import _stage, shards  # noqa: F401 (fixture)


@pytest.fixture(autouse=True)
def empty_store():
    """Each test starts without images cached by an earlier one (same seeds, same towers)."""
    clear_shared()
    yield
    clear_shared()


def counting_rows(monkeypatch, tower) -> list[int]:
    """The number of images each call of ``tower``'s class forward computes."""
    rows: list[int] = []
    forward = type(tower).forward

    def counted(self, *args, **kwargs):
        pixels = args[0] if args else kwargs["pixel_values"]
        if self is tower:
            rows.append(pixels.shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(tower), "forward", counted)
    return rows


@pytest.mark.parametrize("arch", sorted(SCHEDULES))
def test_a_frozen_tower_computes_each_image_once_and_the_loss_and_gradients_stay(
        arch, tokenizer, tmp_path, monkeypatch):
    _, _, model, processor = build(arch, tokenizer, tmp_path)
    apply_unfreezing(model, SCHEDULES[arch], lora_rank=4)  # the tower frozen
    batch = colour_batch(processor)  # 4 rows, 2 distinct images (red, blue)
    model.train()
    plain_loss, plain = loss_and_grads(model, batch)
    rows = counting_rows(monkeypatch, vision_tower(model))
    with cached_tower(model, max_bytes=2**20) as stats:
        losses_grads = [loss_and_grads(model, batch) for _ in range(2)]
    assert rows == [2]  # the two distinct images, once; the second step is served whole
    assert (stats.misses, stats.hits) == (2, 6)
    assert stats.metrics()["tower_cache_hit_rate"] == pytest.approx(0.75)
    for loss, grads in losses_grads:
        assert loss == pytest.approx(plain_loss, abs=1e-6)
        assert set(grads) == set(plain) and plain
        for name, grad in plain.items():
            assert torch.allclose(grads[name], grad, atol=1e-6, rtol=1e-5), name
    assert "forward" not in vars(vision_tower(model))  # the tower's own forward after the block


def test_a_tower_that_trains_or_a_full_cache_computes_every_image(tokenizer, tmp_path, monkeypatch):
    _, _, model, processor = build("idefics3", tokenizer, tmp_path)
    batch = colour_batch(processor)
    apply_unfreezing(model, {"vision": "full", "connector": "full", "text": "full"})
    rows = counting_rows(monkeypatch, vision_tower(model))
    with cached_tower(model, max_bytes=2**20) as stats:
        loss_and_grads(model, batch)
        loss_and_grads(model, batch)
    assert rows == [4, 4] and stats.bypassed == 2 and stats.metrics() == {}
    assert any(p.grad is not None for p in vision_tower(model).parameters())

    apply_unfreezing(model, SCHEDULES["idefics3"])
    rows.clear()
    with cached_tower(model, max_bytes=1) as stats:  # no room for one image
        first = loss_and_grads(model, batch)[0]
        assert loss_and_grads(model, batch)[0] == pytest.approx(first, abs=1e-6)
    assert rows == [2, 2] and stats.bytes == 0 and stats.hits == 4  # repeats within a batch only


def test_a_copy_with_changed_tower_weights_gets_its_own_store(tokenizer, tmp_path):
    _, _, model, processor = build("idefics3", tokenizer, tmp_path)
    apply_unfreezing(model, SCHEDULES["idefics3"])
    batch = colour_batch(processor)
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        with cached_tower(model, max_bytes=2**20) as stats:
            model(**batch)
            reference = copy.deepcopy(model)
            torch.nn.init.zeros_(vision_tower(reference).post_layernorm.weight)
            changed = reference(**batch).logits
            assert torch.equal(model(**batch).logits, expected)
        assert stats.hits == 6  # the original's repeats: the copy computed its own
        assert not torch.allclose(changed, expected)


def test_every_model_holding_the_same_tower_shares_its_images(tokenizer, tmp_path, monkeypatch):
    _, _, model, processor = build("idefics3", tokenizer, tmp_path)
    apply_unfreezing(model, {"vision": "frozen", "connector": "full", "text": "full"})
    batch = colour_batch(processor)
    model.eval()
    with torch.no_grad(), cached_tower(model, max_bytes=2**20) as stats:
        expected = model(**batch).logits  # a training stage: the two images computed
        reference = copy.deepcopy(model)  # align's `reference: copy`
        assert torch.equal(reference(**batch).logits, expected)
    assert (stats.misses, stats.hits) == (2, 2)
    loaded, _ = load_vlm(save_vlm(model, processor, tmp_path / "version"))  # an evaluated version
    loaded.requires_grad_(False)
    rows = counting_rows(monkeypatch, vision_tower(loaded))
    with torch.no_grad(), cached_tower(loaded, max_bytes=2**20) as served:
        assert torch.allclose(loaded(**batch).logits, expected, atol=1e-6)
    assert rows == [] and (served.misses, served.hits) == (0, 4)

    apply_unfreezing(loaded, {"vision": "full", "connector": "full", "text": "full"})
    with cached_tower(loaded, max_bytes=2**20) as trained:
        loaded.train()
        loss_and_grads(loaded, batch)
        torch.optim.SGD(loaded.parameters(), lr=1.0).step()  # the tower changes
        loaded.eval()
        loaded.requires_grad_(False)
        with torch.no_grad():
            assert not torch.allclose(loaded(**batch).logits, expected)
    assert rows == [4, 2] and trained.bypassed == 1 and trained.misses == 2  # new weights, new store


def test_the_budget_comes_from_the_environment(monkeypatch, tokenizer, tmp_path):
    monkeypatch.setenv("VLMFORGE_TOWER_CACHE_MB", "0.5")
    assert budget_bytes() == 2**19
    monkeypatch.setenv("VLMFORGE_TOWER_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="VLMFORGE_TOWER_CACHE_MB must be a number of MiB, got 'lots'"):
        budget_bytes()
    monkeypatch.setenv("VLMFORGE_TOWER_CACHE_MB", "0")
    _, _, model, _ = build("idefics3", tokenizer, tmp_path)
    with cached_tower(model) as stats:
        assert stats is None and "forward" not in vars(vision_tower(model))


def test_a_stage_with_a_frozen_tower_reports_its_cache(tokenizer, tmp_path, shards):  # noqa: F811
    _, _, model, processor = build("idefics3", tokenizer, tmp_path)
    apply_unfreezing(model, SCHEDULES["idefics3"])
    stage = _stage(kind="pretrain", sources=["scenes_vqa"], split_turns=True,
                   train={"steps": 3, "batch_size": 4})
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256)
    metrics = run.tower_cache.metrics()
    assert metrics["tower_cache_hits"] > 0 and metrics["tower_cache_misses"] > 0  # turns share images
    assert run.encode_memo.misses > 0 and "encode_memo_hit_rate" in run.encode_memo.metrics()
    assert "forward" not in vars(vision_tower(model))
