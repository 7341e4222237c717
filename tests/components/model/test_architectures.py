"""Every architecture: backbones copied in exactly, Auto-class round trip, and a loss that
falls through ChatEncoder batches with the recipe's unfreezing schedule (LoRA included)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from components.model.architectures import ARCHITECTURES, spec, spec_of
from components.model.build import assemble, processor_for
from components.model.freeze import apply_unfreezing, merge_lora
from components.model.spec import ModelSpec
from tests.components.model.helpers import (
    CLASSES,
    SCHEDULES,
    build,
    colour_batch,
    fit,
    model_spec,
    saved_backbones,
)


def _towers(model):
    """(vision transformer, decoder-only LM callable returning logits) inside the VLM."""
    inner = model.model
    if hasattr(inner, "vision_tower"):
        return inner.vision_tower, lambda ids: model.lm_head(inner.language_model(input_ids=ids)[0])
    if hasattr(inner, "text_model"):
        return inner.vision_model, lambda ids: model.lm_head(inner.text_model(input_ids=ids)[0])
    return inner.vision_model, None  # idefics: its decoder is checked through the whole model


def _vlm_and_lm_logits(model, lm, batch):
    """The VLM's and the standalone LM's logits at a batch's real positions (padding
    positions are numbered differently)."""
    vlm = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    ref = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    return vlm[real], ref[real]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_assembled_towers_match_standalone_backbones(arch, tokenizer, tmp_path):
    vision, lm, model, processor = build(arch, tokenizer, tmp_path)
    model.eval()
    assert type(model).__name__ == CLASSES[arch] and spec_of(model).name == arch
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, len(tokenizer), (2, 9))
    tower, lm_logits = _towers(model)
    with torch.no_grad():
        assert torch.equal(vision(pixel_values=pixels).last_hidden_state,
                           tower(pixel_values=pixels).last_hidden_state)
        if lm_logits is not None:
            assert torch.equal(lm(input_ids=ids).logits, lm_logits(ids))
        else:
            # Flamingo: gates start at zero, so with an image in view the VLM is the LM exactly
            batch = colour_batch(processor, 2)
            assert batch["image_attention_mask"].any()
            vlm, ref = _vlm_and_lm_logits(model, lm, batch)
            assert torch.allclose(vlm, ref, atol=1e-6), (vlm - ref).abs().max()


def test_open_cross_attention_gates_let_the_image_in_from_the_start(tokenizer, tmp_path):
    vision, lm = saved_backbones("idefics", len(tokenizer), tmp_path)
    model = assemble(model_spec("idefics", cross_attn_gate="ones"), vision, lm, tokenizer, seed=0)
    model.eval()
    gates = [p for n, p in model.named_parameters() if ".alpha_" in n]
    assert gates and all(torch.equal(g, torch.ones_like(g)) for g in gates)
    with torch.no_grad():
        vlm, ref = _vlm_and_lm_logits(model, lm, colour_batch(processor_for(model, tokenizer, 32), 2))
    assert not torch.allclose(vlm, ref, atol=1e-3)  # the new layers already count
    with pytest.raises(ValueError, match="cross_attn_gate does not apply"):
        ModelSpec(architecture="llava", cross_attn_gate="ones")


def test_flamingo_without_resampler_cross_attends_to_the_patch_features(tokenizer, tmp_path):
    vision, lm = saved_backbones("idefics", len(tokenizer), tmp_path)
    model = assemble(model_spec("idefics", use_resampler=False, cross_attn_gate="ones"),
                     vision, lm, tokenizer, seed=0)
    assert not [n for n, _ in model.named_parameters() if "perceiver" in n]
    processor = processor_for(model, tokenizer, 32)
    batch = colour_batch(processor, 2)
    model.eval()
    with torch.no_grad():
        other = {**batch, "pixel_values": torch.randn_like(batch["pixel_values"])}
        assert not torch.allclose(model(**batch).logits, model(**other).logits, atol=1e-4)
    model.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    assert loaded.config.use_resampler is False
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    # without the resampler the connector is the cross-attention's key and value projections
    counts = apply_unfreezing(model, {**SCHEDULES["idefics"], "connector": "frozen"}, lora_rank=4)
    key_values = [p for n, p in model.named_parameters() if n.endswith(("k_proj.weight", "v_proj.weight"))
                  and ".cross_attn." in n]
    assert key_values and not any(p.requires_grad for p in key_values) and counts["connector"] == 0
    assert counts["cross_attn"] > 0
    model.train()
    torch.manual_seed(0)
    losses = fit(model, colour_batch(processor), 12)
    assert losses[-1] < 0.6 * losses[0], losses
    with pytest.raises(ValueError, match="use_resampler does not apply"):
        ModelSpec(architecture="idefics2", use_resampler=False)


def test_flamingo_cross_attention_can_normalise_its_queries_and_keys(tokenizer, tmp_path):
    vision, lm = saved_backbones("idefics", len(tokenizer), tmp_path)
    model = assemble(model_spec("idefics", cross_attn_qk_norm=True, cross_attn_gate="ones"),
                     vision, lm, tokenizer, seed=0)
    assert all(layer.cross_attn.qk_layer_norms for layer in model.model.gated_cross_attn_layers)
    assert not any(layer.self_attn.qk_layer_norms for layer in model.model.layers)  # the LM as it was
    batch = colour_batch(processor_for(model, tokenizer, 32), 2)
    model.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    assert loaded.config.qk_layer_norms is True
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded(**batch).logits)
    with pytest.raises(ValueError, match="cross_attn_qk_norm does not apply"):
        ModelSpec(architecture="llava", cross_attn_qk_norm=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saved_vlm_loads_with_auto_classes(arch, tokenizer, tmp_path):
    _, _, model, processor = build(arch, tokenizer, tmp_path)
    model.eval()
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    proc = AutoProcessor.from_pretrained(tmp_path / "vlm")
    assert type(loaded).__name__ == CLASSES[arch] and type(proc) is type(processor)
    batch = colour_batch(proc)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_falls_with_the_unfreezing_schedule(arch, tokenizer, tmp_path):
    _, lm, model, processor = build(arch, tokenizer, tmp_path)
    counts = apply_unfreezing(model, SCHEDULES[arch], lora_rank=4)
    assert counts["vision"] == 0 and counts["connector"] > 0
    assert (counts["text"] > 0) == (SCHEDULES[arch]["text"] == "lora")
    batch = colour_batch(processor)
    text_before = {k: v.clone() for k, v in lm.state_dict().items()}
    torch.manual_seed(0)
    losses = fit(model, batch, 12)
    assert losses[-1] < 0.6 * losses[0], losses
    merge_lora(model)
    assert type(model).__name__ == CLASSES[arch]
    if spec(arch).family == "cross-attention":  # the frozen LM is untouched, bit for bit
        state = model.state_dict()
        assert torch.equal(state["lm_head.weight"], text_before["lm_head.weight"])
        for k, v in text_before.items():
            if k.startswith("model."):
                assert torch.equal(state[k], v), k


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if spec(a).standardize])
@torch.no_grad()
def test_standardize_features_whitens_what_the_connector_reads(arch, tokenizer, tmp_path):
    _, _, model, _ = build(arch, tokenizer, tmp_path)
    model.eval()
    pixels = torch.randn(16, 3, 32, 32)
    if arch == "llava":  # folded into the projector: linear_1 sees standardised features
        linear = model.model.multi_modal_projector.linear_1
        before = torch.nn.Linear(linear.in_features, linear.out_features)
        before.load_state_dict(linear.state_dict())
        feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        flat = feats.reshape(-1, feats.shape[-1])
        spec(arch).standardize(model, pixels)
        z = (flat - flat.mean(0)) / flat.std(0)
        assert torch.allclose(linear(flat), before(z), atol=1e-4)
    else:  # folded into the tower's final LayerNorm: its output is whitened
        spec(arch).standardize(model, pixels)
        out = model.model.vision_model(pixel_values=pixels).last_hidden_state
        flat = out.reshape(-1, out.shape[-1])
        assert torch.allclose(flat.mean(0), torch.zeros(flat.shape[-1]), atol=1e-4)
        assert torch.allclose(flat.std(0), torch.ones(flat.shape[-1]), atol=1e-3)
