"""Idefics (v1), the open Flamingo: a frozen causal LM with freshly initialised gated
cross-attention layers every `cross_layer_interval` LM layers, attending to a perceiver
resampler's latents of each image.

`IdeficsForVisionText2Text` carries its own copies of a CLIP vision transformer and a
Llama decoder, so assembly copies the backbones in by name:

* vision: a CLIP vision tower maps 1:1 (`vision_model.*`, same module names and maths).
  A SigLIP tower can NOT be copied exactly: Idefics' tower has a CLS token, a LayerNorm
  before the encoder and no patch-embedding bias. Such a tower is refused, not approximated.
* LM: Llama's `model.layers.N.{self_attn,mlp,*_layernorm}`, `model.norm`,
  `model.embed_tokens` and `lm_head` map 1:1; Idefics has no grouped-query attention,
  attention/MLP biases or a separate head_dim, so the LM must have none of these.

The gates (`alpha_cross_attn`, `alpha_dense`) start at zero, so before training the VLM
computes exactly what the LM computes (a test checks this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    IdeficsConfig,
    IdeficsForVisionText2Text,
    IdeficsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

from components.model.architectures import Architecture, Features
from components.model.backbones import IMAGE_MEAN, IMAGE_STD
from components.model.common import (
    check_vocab,
    copy_exact,
    seeded,
    set_generation_ids,
    vision_tower_state,
)


def _check_backbones(vision_config, text_config) -> None:
    if not vision_config.model_type.startswith("clip"):
        raise ValueError(f"idefics (Flamingo) needs a CLIP vision tower, got {vision_config.model_type!r}: "
                         "its tower has a CLS token and a pre-encoder LayerNorm, so SigLIP weights "
                         "cannot be copied in exactly")
    if text_config.model_type != "llama":
        raise ValueError(f"idefics needs a Llama LM, got {text_config.model_type!r}")
    heads = text_config.num_attention_heads
    problems = {
        "grouped-query attention": text_config.num_key_value_heads != heads,
        "attention bias": bool(getattr(text_config, "attention_bias", False)),
        "MLP bias": bool(getattr(text_config, "mlp_bias", False)),
        "head_dim != hidden/heads": getattr(text_config, "head_dim", None)
        not in (None, text_config.hidden_size // heads),
    }
    bad = [name for name, hit in problems.items() if hit]
    if bad:
        raise ValueError(f"this Llama LM cannot be copied into Idefics exactly: {bad}")


def idefics_config(vision_config, text_config, *, cross_layer_interval: int, n_latents: int,
                   resampler_depth: int, resampler_heads: int, resampler_head_dim: int,
                   tokenizer: PreTrainedTokenizerBase, gate: str = "zeros",
                   use_resampler: bool = True, qk_norm: bool = False) -> IdeficsConfig:
    vision = dict(embed_dim=vision_config.hidden_size, image_size=vision_config.image_size,
                  intermediate_size=vision_config.intermediate_size,
                  patch_size=vision_config.patch_size, num_channels=vision_config.num_channels,
                  num_hidden_layers=vision_config.num_hidden_layers,
                  num_attention_heads=vision_config.num_attention_heads,
                  hidden_act=vision_config.hidden_act, layer_norm_eps=vision_config.layer_norm_eps)
    t = text_config
    return IdeficsConfig(
        vocab_size=t.vocab_size, additional_vocab_size=0, hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads, hidden_act=t.hidden_act,
        rms_norm_eps=t.rms_norm_eps, max_position_embeddings=t.max_position_embeddings,
        rope_parameters=dict(t.rope_parameters), tie_word_embeddings=bool(t.tie_word_embeddings),
        cross_layer_interval=cross_layer_interval, alpha_initializer=gate, alpha_type="float",
        use_resampler=use_resampler, qk_layer_norms=qk_norm,
        perceiver_config=dict(use_resampler=use_resampler, resampler_n_latents=n_latents,
                              resampler_depth=resampler_depth, resampler_n_heads=resampler_heads,
                              resampler_head_dim=resampler_head_dim),
        vision_config=vision,
        # this project's unfreezing schedule sets requires_grad; keep the modules plain
        freeze_text_layers=False, freeze_vision_layers=False, freeze_lm_head=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def llama_to_idefics_state(lm: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Llama weights under the names `IdeficsForVisionText2Text` uses (identical layout)."""
    state = {f"model.{k}": v for k, v in lm.model.state_dict().items()}
    state["lm_head.weight"] = lm.lm_head.weight
    return state


def assemble_idefics(vision: PreTrainedModel, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     *, seed: int = 0, cross_layer_interval: int = 1, n_latents: int = 16,
                     resampler_depth: int = 2, resampler_heads: int = 4,
                     resampler_head_dim: int | None = None, gate: str = "zeros",
                     use_resampler: bool = True, qk_norm: bool = False,
                     **_: object) -> IdeficsForVisionText2Text:
    """Flamingo-style VLM: both backbones copied in by name; perceiver + gated cross-attention
    layers are new (from ``seed``), their gates at zero (``gate="ones"``: open). Without the
    resampler the cross-attention reads the tower's patch features (and CLS) directly."""
    check_vocab(lm, tokenizer)
    _check_backbones(vision.config, lm.config)
    if lm.config.num_hidden_layers % cross_layer_interval:
        raise ValueError(f"{lm.config.num_hidden_layers} LM layers not divisible by "
                         f"cross_layer_interval {cross_layer_interval}")
    config = idefics_config(
        vision.config, lm.config, cross_layer_interval=cross_layer_interval, n_latents=n_latents,
        resampler_depth=resampler_depth, resampler_heads=resampler_heads,
        resampler_head_dim=resampler_head_dim or vision.config.hidden_size // resampler_heads,
        tokenizer=tokenizer, gate=gate, use_resampler=use_resampler, qk_norm=qk_norm)
    with seeded(seed):
        model = IdeficsForVisionText2Text(config)
    copy_exact(model.model.vision_model, vision_tower_state(vision), "vision")
    new = ("model.vision_model.", "model.perceiver_resampler.", "model.gated_cross_attn_layers.")
    target = {k for k in model.state_dict() if not k.startswith(new)}
    source = llama_to_idefics_state(lm)
    if set(source) != target:
        raise ValueError(f"LM names do not map: only in LM {sorted(set(source) - target)[:5]}, "
                         f"only in Idefics {sorted(target - set(source))[:5]}")
    model.load_state_dict(source, strict=False)
    set_generation_ids(model, tokenizer)
    return model


def idefics_processor(model, tokenizer: PreTrainedTokenizerBase, longest_edge: int, *,
                      image_mean: Sequence[float] = IMAGE_MEAN,
                      image_std: Sequence[float] = IMAGE_STD) -> IdeficsProcessor:
    """One view per image at the tower's native size (Idefics has no image splitting),
    normalised with the tower's own mean/std."""
    size = model.config.vision_config.image_size
    if longest_edge != size:
        raise ValueError(f"idefics runs at the tower's native {size} px; a stage asked for {longest_edge} px")
    image_processor = IdeficsImageProcessorPil(image_size=size, image_mean=list(image_mean),
                                               image_std=list(image_std), resample=3)
    processor = IdeficsProcessor(image_processor=image_processor, tokenizer=tokenizer, image_size=size)
    processor.chat_template = tokenizer.chat_template
    return processor


def _assemble(vision, lm, tokenizer, model_spec, seed: int) -> IdeficsForVisionText2Text:
    m = model_spec
    return assemble_idefics(vision, lm, tokenizer, seed=seed,
                            cross_layer_interval=m.cross_layer_interval, n_latents=m.resampler_latents,
                            resampler_depth=m.resampler_depth, resampler_heads=m.resampler_heads,
                            resampler_head_dim=m.resampler_head_dim, gate=m.cross_attn_gate,
                            use_resampler=m.use_resampler, qk_norm=m.cross_attn_qk_norm)


SPEC = Architecture(
    name="idefics", model_type="idefics", family="cross-attention",
    assemble=_assemble, processor=idefics_processor,
    # the connector maps image features into the LM's attention: the perceiver resampler and
    # every cross-attention layer's key and value projections (which `ground_connector` fits)
    groups={"vision": ("model.vision_model.",),
            "connector": ("model.perceiver_resampler.", "model.gated_cross_attn_layers.*.cross_attn.k_proj.",
                          "model.gated_cross_attn_layers.*.cross_attn.v_proj."),
            "cross_attn": ("model.gated_cross_attn_layers.",),
            "text": ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")},
    card=lambda m: ((f"perceiver resampler ({m.resampler_latents} latents)" if m.use_resampler
                     else "the tower's patch features") + " and gated "
                    f"cross-attention every {m.cross_layer_interval} LM layer(s)"),
    supports=Features(packing=False, splitting=False),
    options=("resampler_latents", "use_resampler", "resampler_depth", "resampler_heads",
             "resampler_head_dim", "cross_layer_interval", "cross_attn_gate", "cross_attn_qk_norm"),
)
