"""The grounded connector fit: token geometry, phrase targets, the closed-form fit and the
stage that runs it (steps 0)."""

from __future__ import annotations

import pytest
import torch

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.build import assemble, processor_for
from components.recipe import parse_stage
from components.training.grounding import (
    NOWHERE,
    QUADRANT_BOXES,
    fit_connector,
    phrase_embedding,
    projection_of,
    regions,
    token_boxes,
    token_targets,
    word_table,
)
from components.training.stage import run_stage
from tests.components.model.helpers import build, model_spec, saved_backbones

QUADRANTS = list(QUADRANT_BOXES.values())


def _r2(out: torch.Tensor, target: torch.Tensor) -> float:
    """Share of the targets' variance (around their mean vector) that ``out`` explains."""
    flat = target.reshape(-1, target.shape[-1])
    return (1 - ((out - target) ** 2).sum() / ((target - flat.mean(0)) ** 2).sum()).item()


def test_token_boxes_follow_the_idefics3_layout():
    assert token_boxes(0, 0, 2) == QUADRANTS  # unsplit: the global view, row-major
    split = token_boxes(2, 2, 2)
    assert len(split) == 2 * 2 * 4 + 4
    assert split[0] == (0.0, 0.0, 0.25, 0.25)  # tile (0, 0), its first token
    assert split[4] == (0.5, 0.0, 0.75, 0.25)  # tile (0, 1) starts after tile (0, 0)'s 4 tokens
    assert split[15] == (0.75, 0.75, 1.0, 1.0)
    assert split[16:] == QUADRANTS  # then the global view


def test_each_token_targets_the_phrase_of_the_region_holding_its_centre(tokenizer):
    emb = torch.randn(len(tokenizer), 8)
    record = {"objects": [{"colour": "red", "shape": "circle", "quadrant": "top right"}]}
    targets = token_targets(regions(record), token_boxes(2, 2, 2), tokenizer, emb)
    red_circle = emb[tokenizer.encode(" red circle", add_special_tokens=False)].sum(0)
    assert torch.equal(phrase_embedding(tokenizer, emb, "red circle"), red_circle)
    occupied = {4, 5, 6, 7, 17}  # tile (0, 1) and the global view's top-right token
    for i, row in enumerate(targets):
        assert torch.equal(row, red_circle if i in occupied else torch.zeros(8)), i
    assert regions({"objects": [{"colour": "red", "shape": "circle"}]}) == []  # no quadrant: no region


def _scenes(split: str, n: int):
    return [(s.images[0], s.record) for s in generate_samples("scenes_caption", 0, split, 0, n, image_size=32)]


def test_fit_lands_region_tokens_on_their_phrase_embeddings(backbones, tokenizer):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    before = {k: v.clone() for k, v in model.state_dict().items() if "connector" not in k}
    heldout = _scenes("val", 40)
    fit = fit_connector(model, processor.image_processor, tokenizer, _scenes("train", 300), 1e-3, heldout)
    assert (fit.images, fit.tokens) == (300, 1200)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # tower and LM untouched

    # the reported held-out R^2 is the connector's, recomputed here from its outputs
    emb = model.get_input_embeddings().weight.detach()
    pixels = processor.image_processor([[im] for im, _ in heldout], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.model.connector(model.model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state)
    target = torch.stack([token_targets(regions(r), QUADRANTS, tokenizer, emb) for _, r in heldout])
    assert fit.heldout_r2 == pytest.approx(_r2(out, target), abs=1e-4)
    assert fit.r2 > 0.6 and fit.heldout_r2 > 0.3
    # an occupied quadrant's token lies nearer its own target than the background's zero does
    occupied = target.norm(dim=-1) > 0
    assert ((out - target).norm(dim=-1)[occupied] < target.norm(dim=-1)[occupied]).float().mean() > 0.75


def test_name_position_adds_the_quadrant_to_each_phrase_and_the_fit_targets_it(backbones, tokenizer):
    record = {"objects": [{"colour": "red", "shape": "circle", "quadrant": "top right"}]}
    assert regions(record, name_position=True) == [(QUADRANT_BOXES["top right"], "red circle top right")]
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    heldout = _scenes("val", 20)
    fit = fit_connector(model, processor.image_processor, tokenizer, _scenes("train", 100), 1e-3, heldout,
                        name_position=True)
    emb = model.get_input_embeddings().weight.detach()
    pixels = processor.image_processor([[im] for im, _ in heldout], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.model.connector(model.model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state)

    def r2(named: bool) -> float:
        target = torch.stack([token_targets(regions(r, named), QUADRANTS, tokenizer, emb) for _, r in heldout])
        return _r2(out, target)

    assert fit.heldout_r2 == pytest.approx(r2(True), abs=1e-4) and r2(True) != pytest.approx(r2(False), abs=1e-3)


def test_llava_fits_its_second_projector_layer_over_one_token_per_patch(tokenizer, tmp_path):
    *_, model, processor = build("llava", tokenizer, tmp_path)
    projector = model.model.multi_modal_projector
    first = projector.linear_1.weight.clone()
    heldout = _scenes("val", 40)
    fit = fit_connector(model, processor.image_processor, tokenizer, _scenes("train", 300), 1e-3, heldout)
    assert (fit.images, fit.tokens) == (300, 300 * 16)  # 32 px, patch 8: 4 x 4 tokens
    assert torch.equal(projector.linear_1.weight, first)  # only linear_2 is fitted
    emb = model.get_input_embeddings().weight.detach()
    pixels = processor.image_processor([im for im, _ in heldout], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=pixels, vision_feature_layer=-1,
                                             vision_feature_select_strategy="full").pooler_output
    out = torch.stack(list(out))
    target = torch.stack([token_targets(regions(r), token_boxes(0, 0, 4), tokenizer, emb)
                          for _, r in heldout])
    assert fit.heldout_r2 == pytest.approx(_r2(out, target), abs=1e-4)
    # 32 random features of an untrained micro tower: some of the targets' variance, not most
    assert fit.r2 > 0.15 and fit.heldout_r2 > 0.1


def _flamingo_without_resampler(tokenizer, tmp_path):
    vision, lm = saved_backbones("idefics", len(tokenizer), tmp_path)
    model = assemble(model_spec("idefics", use_resampler=False), vision, lm, tokenizer, seed=0)
    return model, processor_for(model, tokenizer, 32)


def _tower_tokens(model, processor, scenes) -> torch.Tensor:
    """The tower's CLS and patch features of the scenes' images, as the cross-attention reads them."""
    pixels = processor.image_processor([im for im, _ in scenes], return_tensors="pt")
    with torch.no_grad():
        return model.model.vision_model(pixel_values=pixels).last_hidden_state


def test_flamingo_without_resampler_fits_every_cross_attention_layer_keys_and_values(tokenizer, tmp_path):
    model, processor = _flamingo_without_resampler(tokenizer, tmp_path)
    untouched = {k: v.clone() for k, v in model.state_dict().items() if "gated_cross_attn" not in k}
    heldout = _scenes("val", 40)
    fit = fit_connector(model, processor.image_processor, tokenizer, _scenes("train", 300), 1e-3, heldout)
    assert (fit.images, fit.tokens) == (300, 300 * 17)  # CLS + 4 x 4 patches
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in untouched.items())  # tower and LM untouched
    emb = model.get_input_embeddings().weight.detach()
    features = _tower_tokens(model, processor, heldout)
    target = torch.stack([token_targets(regions(r), [NOWHERE] + token_boxes(0, 0, 4), tokenizer, emb)
                          for _, r in heldout])
    for layer in model.model.gated_cross_attn_layers:
        attention = layer.cross_attn
        assert torch.equal(attention.k_proj.weight, attention.v_proj.weight)
        assert torch.equal(attention.q_proj.weight, torch.eye(emb.shape[1]))
        assert torch.equal(attention.o_proj.weight, torch.eye(emb.shape[1]))
        with torch.no_grad():
            out = attention.v_proj(features)
        assert fit.heldout_r2 == pytest.approx(_r2(out, target), abs=1e-4)
    assert fit.r2 > 0.15 and fit.heldout_r2 > 0.1


def test_word_targets_fold_a_bag_of_words_fit_under_each_cross_attention_layer(tokenizer, tmp_path):
    model, processor = _flamingo_without_resampler(tokenizer, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, heldout = _scenes("train", 300), _scenes("val", 40)
    fit = fit_connector(model, processor.image_processor, tokenizer, train, 1e-3, heldout, targets="words")
    table = word_table(tokenizer, (p for _, r in train for _, p in regions(r)))
    red_circle = token_targets(regions({"objects": [{"colour": "red", "shape": "circle",
                                                      "quadrant": "top left"}]}), [NOWHERE, QUADRANTS[0]],
                               tokenizer, table)
    assert red_circle[0].abs().sum() == 0 and sorted(red_circle[1].unique().tolist()) == [0.0, 3.0]
    assert int((red_circle[1] > 0).sum()) == len(tokenizer.encode(" red circle", add_special_tokens=False))
    # the tokens' word coordinates, as the ridge fit over the tower's CLS and patch features gives them
    x = _tower_tokens(model, processor, train)
    x, width = x.reshape(-1, x.shape[-1]).double(), x.shape[-1]
    y = torch.cat([token_targets(regions(r), [NOWHERE] + token_boxes(0, 0, 4), tokenizer, table)
                   for _, r in train]).double()
    weight = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(width, dtype=torch.float64), x.T @ y).float()
    words = table.shape[1]
    for i, layer in enumerate(model.model.gated_cross_attn_layers):
        for name in ("k_proj", "v_proj"):
            initial = before[f"model.gated_cross_attn_layers.{i}.cross_attn.{name}.weight"]
            assert torch.allclose(getattr(layer.cross_attn, name).weight, initial[:, :words] @ weight.T,
                                  atol=1e-4)
        for name in ("q_proj", "o_proj"):  # queries and outputs keep their random start
            assert torch.equal(getattr(layer.cross_attn, name).weight,
                               before[f"model.gated_cross_attn_layers.{i}.cross_attn.{name}.weight"])
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if "gated_cross_attn" not in k)
    assert 0.15 < fit.r2 <= 1 and fit.heldout_r2 is not None and fit.heldout_r2 > 0.1


def test_word_targets_need_a_model_with_cross_attention(tokenizer, tmp_path):
    *_, model, processor = build("llava", tokenizer, tmp_path)
    with pytest.raises(ValueError, match="targets: words needs idefics without a resampler"):
        fit_connector(model, processor.image_processor, tokenizer, _scenes("train", 10), 1e-3, targets="words")


def test_flamingo_with_its_resampler_cannot_be_grounded(tokenizer, tmp_path):
    *_, model, _ = build("idefics", tokenizer, tmp_path)
    with pytest.raises(ValueError, match="use_resampler: false"):
        projection_of(model)


def test_a_connector_without_one_linear_projection_cannot_be_grounded(tokenizer, tmp_path):
    *_, idefics2, _ = build("idefics2", tokenizer, tmp_path)
    with pytest.raises(ValueError, match="Idefics3-style connector"):
        projection_of(idefics2)


@pytest.fixture(scope="module")
def scene_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding-shards")
    for split, n in (("train", 40), ("val", 8)):
        write_shard(generate_samples("scenes_caption", 0, split, 0, n, image_size=32),
                    root / split / "scenes_caption-0000.tar")
    return root


def test_a_ground_connector_stage_fits_and_takes_no_gradient_step(backbones, tokenizer, scene_shards):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = parse_stage(dict(name="ground", kind="pretrain", longest_edge=32, sources=["scenes_caption"],
                             unfreeze={"vision": "frozen", "connector": "full", "text": "frozen"},
                             ground_connector={"images": 30, "ridge": 1e-3}, train={"steps": 0}))
    weight = projection_of(model).weight.clone()
    run = run_stage(model, processor, stage, scene_shards, seed=0, max_length=256)
    assert run.result.steps == 0 and run.result.history == []
    assert (run.grounding.images, run.grounding.tokens) == (30, 120)
    assert run.grounding.heldout_r2 is not None
    assert not torch.equal(projection_of(model).weight, weight)


def test_only_a_grounding_pretrain_stage_may_take_no_steps():
    base = dict(name="s", longest_edge=32, sources=["scenes_caption"],
                unfreeze={"vision": "frozen", "connector": "full", "text": "frozen"})
    with pytest.raises(ValueError, match="train.steps is 0"):
        parse_stage(dict(kind="pretrain", train={"steps": 0}, **base))
    with pytest.raises(ValueError, match="sft.ground_connector"):  # a pretrain-only option
        parse_stage(dict(kind="sft", ground_connector={}, **base))
    with pytest.raises(ValueError, match="train.steps is 0"):
        parse_stage(dict(kind="sft", train={"steps": 0}, **base))
