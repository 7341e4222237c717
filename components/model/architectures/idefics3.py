"""Assemble an Idefics3 / SmolVLM-style VLM from a vision tower and a causal LM.

The backbone weights are copied in exactly; only the connector (pixel shuffle +
linear projection) is freshly initialised. The result is a stock
`Idefics3ForConditionalGeneration`, loadable with the Auto classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from components.model.architectures import Architecture, Features
from components.model.backbones import IMAGE_MEAN, IMAGE_STD
from components.model.common import (
    check_vocab,
    copy_exact,
    pool_init,
    scale_to_embeddings,
    set_generation_ids,
    vision_tower_state,
)

VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps")


def idefics3_config(vision_config, text_config, *, scale_factor: int, image_token_id: int) -> Idefics3Config:
    """Idefics3 config whose towers mirror the given backbone configs."""
    vision = {k: getattr(vision_config, k) for k in VISION_KEYS}
    return Idefics3Config(
        vision_config=vision,
        text_config=text_config.to_dict(),
        scale_factor=scale_factor,
        image_token_id=image_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def assemble_idefics3(
    vision: PreTrainedModel,
    lm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    scale_factor: int,
    seed: int = 0,
    connector_init: str = "random",
) -> Idefics3ForConditionalGeneration:
    """Build the VLM and copy both backbones' weights into it; only the connector is new,
    initialised from ``seed`` (not from whatever state the global RNG happens to be in):
    ``random`` (independent weights per merged patch) or ``pool`` (`pool_init`)."""
    n_patches = (vision.config.image_size // vision.config.patch_size)
    if n_patches % scale_factor:
        raise ValueError(f"{n_patches} patches per side not divisible by scale_factor {scale_factor}")
    check_vocab(lm, tokenizer)
    config = idefics3_config(
        vision.config, lm.config,
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    config.text_config.pad_token_id = tokenizer.pad_token_id
    model = Idefics3ForConditionalGeneration(config)

    copy_exact(model.model.vision_model, vision_tower_state(vision), "vision")
    copy_exact(model.model.text_model, lm.model.state_dict(), "language model")
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    proj, generator = model.model.connector.modality_projection.proj, torch.Generator().manual_seed(seed)
    if connector_init == "pool":
        pool_init(proj, vision.config.hidden_size, lm, generator)
    elif connector_init == "random":
        scale_to_embeddings(proj, lm, generator)
    else:
        raise ValueError(f"unknown connector_init {connector_init!r}; expected 'random' or 'pool'")
    set_generation_ids(model, tokenizer)
    return model


@torch.no_grad()
def standardize_image_features(model: Idefics3ForConditionalGeneration, pixel_values: torch.Tensor) -> None:
    """Fold per-channel standardisation of the vision tower's output into its final LayerNorm.

    Statistics come from ``pixel_values`` (N, 3, tile, tile), a sample of training images.
    Afterwards every output channel enters the connector with mean 0 and variance 1, so
    the low-variance channels that carry shape are not drowned by colour; the model stays
    a stock Idefics3 (only the LayerNorm's weight and bias change).
    """
    vision = model.model.vision_model
    hidden = vision(pixel_values=pixel_values).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    norm = vision.post_layernorm
    norm.weight.div_(std)
    norm.bias.sub_(mean).div_(std)


def image_seq_len(tile_size: int, patch_size: int, scale_factor: int) -> int:
    """Image tokens per tile after pixel shuffle."""
    return (tile_size // patch_size) ** 2 // scale_factor**2


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    *,
    tile_size: int,
    longest_edge: int,
    patch_size: int,
    scale_factor: int,
    image_mean: Sequence[float] = IMAGE_MEAN,
    image_std: Sequence[float] = IMAGE_STD,
) -> Idefics3Processor:
    """Processor whose images are resized to `longest_edge` and split into `tile_size` tiles,
    normalised with the vision tower's own mean/std. Below `tile_size`, the one view is the
    image at `longest_edge` px resized up to the tile: the tower's token count with the detail
    of the smaller image."""
    if longest_edge > tile_size and longest_edge % tile_size:
        raise ValueError(f"longest_edge {longest_edge} above tile_size {tile_size} must be a multiple of it")
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": tile_size},
        do_image_splitting=longest_edge > tile_size,
        resample=3,  # bicubic: close to Lanczos, a third of its cost
        image_mean=list(image_mean),
        image_std=list(image_std),
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(tile_size, patch_size, scale_factor),
        chat_template=tokenizer.chat_template,
    )


def _assemble(vision, lm, tokenizer, model_spec, seed: int) -> Idefics3ForConditionalGeneration:
    return assemble_idefics3(vision, lm, tokenizer, scale_factor=model_spec.scale_factor, seed=seed,
                             connector_init=model_spec.connector_init)


def _processor(model, tokenizer: PreTrainedTokenizerBase, longest_edge: int, *,
               image_mean: Sequence[float] = IMAGE_MEAN,
               image_std: Sequence[float] = IMAGE_STD) -> Idefics3Processor:
    vc = model.config.vision_config
    return build_processor(tokenizer, tile_size=vc.image_size, longest_edge=longest_edge,
                           patch_size=vc.patch_size, scale_factor=model.config.scale_factor,
                           image_mean=image_mean, image_std=image_std)


SPEC = Architecture(
    name="idefics3", model_type="idefics3", family="self-attention",
    assemble=_assemble, processor=_processor,
    groups={"vision": ("model.vision_model.",), "connector": ("model.connector.",),
            "text": ("model.text_model.", "lm_head.")},
    card=lambda m: f"pixel-shuffle connector (scale factor {m.scale_factor})",
    supports=Features(packing=True, splitting=True),
    options=("scale_factor", "connector_init", "standardize_features"),
    standardize=standardize_image_features,
)
