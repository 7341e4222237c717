"""run_stage end to end on real shards: packed SFT with text mixed in, and DPO+SFT alignment."""

from __future__ import annotations

import pytest

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.recipe import StageBase, parse_stage
from components.training.stage import run_stage


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage-shards")
    for source in ("scenes_vqa", "text", "preference", "preference_hallucination"):
        write_shard(generate_samples(source, 0, "train", 0, 24, image_size=32), root / "train" / f"{source}-0000.tar")
        write_shard(generate_samples(source, 0, "val", 0, 8, image_size=32), root / "val" / f"{source}-0000.tar")
    return root


def _stage(train: dict | None = None, **kw) -> StageBase:
    return parse_stage(dict(name="s", longest_edge=32,
                            unfreeze={"vision": "frozen", "connector": "full", "text": "full"},
                            train={"steps": 2, "batch_size": 2, "log_every": 1, "warmup_steps": 1,
                                   **(train or {})}, **kw))


def test_packed_sft_with_text_ratio_trains(backbones, tokenizer, shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="sft", sources=["scenes_vqa", "text"], text_ratio=0.5, packing=True)
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256)
    assert run.result.steps == 2 and run.skipped == 0
    assert all(h["loss"] > 0 for h in run.result.history)


def test_align_logs_reward_metrics_every_step(backbones, tokenizer, shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="align", sources=["preference"], loss="sigmoid_sft", sft_weight=0.5)
    logged = []
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256,
                    on_log=lambda step, row: logged.append(row))
    assert len(logged) == 2 and run.dropped == run.skipped == 0
    for row in logged:
        assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "loss/preference", "loss/sft"} <= set(row)


def test_align_on_the_models_own_captions_reports_what_it_judged(backbones, tokenizer, shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="align", sources=["preference"], loss="sigmoid_sft", rejected_from="model")
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256)
    assert run.result.steps == 2
    assert set(run.corrections) == {"captions_judged", "pairs_corrected"}
    assert run.corrections["captions_judged"] > 0
    with pytest.raises(ValueError, match="sft.rejected_from"):  # an align-only option
        _stage(kind="sft", sources=["scenes_vqa"], rejected_from="model")


def test_a_stage_draws_its_mixture_by_weight_and_reports_the_counts(backbones, tokenizer, shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="pretrain", mixture={"scenes_vqa": 3, "text": 1},
                   train={"steps": 4, "batch_size": 8, "log_every": 2})
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256)
    counts = run.source_counts
    assert set(counts) == {"scenes_vqa", "text"} and sum(counts.values()) >= 32
    assert counts["scenes_vqa"] > counts["text"] > 0


@pytest.mark.parametrize("kind,sources", [("sft", ["scenes_vqa", "text"]), ("align", ["preference"])])
def test_validation_loss_and_answers_every_eval_every_steps(backbones, tokenizer, shards, kind, sources):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind=kind, sources=sources, train={"steps": 4, "log_every": 4, "eval_every": 2})
    logged = []
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256,
                    on_log=lambda step, row: logged.append((step, row)))
    evals = run.result.evals
    assert [e["step"] for e in evals] == [2, 4]
    quiet = stage.model_copy(update={"train": stage.train.model_copy(update={"eval_every": 0})})
    plain = run_stage(assemble_idefics3(*backbones, tokenizer, scale_factor=2), processor, quiet,
                      shards, seed=0, max_length=256)
    assert [h["loss"] for h in run.result.history] == pytest.approx(
        [h["loss"] for h in plain.result.history], abs=1e-6)  # validating leaves training alone
    assert all(e["val_loss"] > 0 and 0 <= e["val_answer_accuracy"] <= 1 for e in evals)
    assert evals[0]["val_loss"] != evals[1]["val_loss"]  # the model changed in between
    assert (2, {k: v for k, v in evals[0].items() if k != "step"}) in logged
    if kind == "align":
        assert "val_rewards/accuracies" in evals[0]


def test_align_trains_on_the_hallucination_preference_source(backbones, tokenizer, shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="align", sources=["preference_hallucination"], loss="sigmoid_sft")
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256)
    assert run.result.steps == 2 and run.dropped == 0
    assert all(h["loss"] > 0 for h in run.result.history)


@pytest.mark.parametrize("reference", ["copy", "cached"])
def test_align_with_replay_adds_the_weighted_supervised_loss(backbones, tokenizer, shards, reference):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = _stage(kind="align", sources=["preference"], loss="sigmoid_sft", reference=reference,
                   replay={"sources": ["scenes_vqa"], "batch_size": 3, "weight": 0.5})
    logged = []
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256,
                    on_log=lambda step, row: logged.append(row))
    assert run.result.steps == 2 and len(logged) == 2
    for row in logged:
        assert row["loss/replay"] > 0
        assert row["loss"] == pytest.approx(row["loss/preference"] + row["loss/sft"]
                                            + 0.5 * row["loss/replay"], rel=1e-4)
