"""Unimodal backbones: a SigLIP-style vision tower and a Llama-style causal LM.

A backbone spec is one of: a hub id or local directory (loaded with the standard
`from_pretrained`), or an inline config dict (a tiny model built from scratch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

BackboneSpec = str | Path | dict[str, Any]

# What this project's own towers are trained with (pixels in [0, 1] -> [-1, 1]), and what a
# tower saved without an image processor config is assumed to expect.
IMAGE_MEAN: tuple[float, ...] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, ...] = (0.5, 0.5, 0.5)


class ImageStats(NamedTuple):
    """Per-channel mean and std a vision tower's pixels are normalised with (after /255)."""

    mean: tuple[float, ...] = IMAGE_MEAN
    std: tuple[float, ...] = IMAGE_STD

    @classmethod
    def of(cls, image_processor) -> ImageStats:
        """The stats an image processor normalises with (a saved VLM's processor carries them)."""
        return cls(tuple(image_processor.image_mean), tuple(image_processor.image_std))


def tiny_vision_config(**overrides: Any) -> SiglipVisionConfig:
    """A SigLIP vision tower small enough to train on a laptop CPU."""
    cfg = dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        hidden_act="gelu_pytorch_tanh",
        vision_use_head=True,
    )
    cfg.update(overrides)
    return SiglipVisionConfig(**cfg)


def tiny_text_tower_config(vocab_size: int, **overrides: Any) -> SiglipTextConfig:
    """The text tower used only while training the vision tower contrastively."""
    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=48,
        projection_size=128,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    cfg.update(overrides)
    return SiglipTextConfig(**cfg)


def tiny_lm_config(vocab_size: int, **overrides: Any) -> LlamaConfig:
    """A Llama-style decoder small enough to train on a laptop CPU."""
    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def _is_inline(spec: BackboneSpec) -> bool:
    return isinstance(spec, dict)


def _from_pretrained_whole(cls, spec: BackboneSpec) -> PreTrainedModel:
    """``cls.from_pretrained``, refusing a checkpoint that leaves any weight of ``cls`` missing:
    transformers would initialise it at random and only log it (e.g. a dual-tower checkpoint
    whose vision names do not map onto the tower class, or an LM saved without its head).
    Tied weights stored once are not missing."""
    model, info = cls.from_pretrained(str(spec), output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"{spec}: weights missing for {type(model).__name__}: "
                         f"{sorted(info['missing_keys'])[:5]}")
    return model


def load_vision_backbone(spec: BackboneSpec) -> PreTrainedModel:
    """Vision tower from a hub id / directory (vision part of a CLIP/SigLIP checkpoint too) or
    a config (SigLIP; CLIP with ``model_type: clip_vision_model``)."""
    if _is_inline(spec):
        spec = dict(spec)
        if spec.pop("model_type", "siglip_vision_model") == "clip_vision_model":
            return CLIPVisionModel(CLIPVisionConfig(**spec))
        return SiglipVisionModel(tiny_vision_config(**spec))
    config = AutoConfig.from_pretrained(str(spec))
    if getattr(config, "vision_config", None) is not None and not config.model_type.endswith("vision_model"):
        # A dual-tower checkpoint (e.g. google/siglip-base-patch16-512): keep the vision tower.
        tower = CLIPVisionModel if config.model_type == "clip" else SiglipVisionModel
        return _from_pretrained_whole(tower, spec)
    return _from_pretrained_whole(AutoModel, spec)


def vision_image_stats(spec: BackboneSpec) -> ImageStats:
    """The normalisation a vision backbone expects: its own image processor's mean/std when one
    is saved with it (CLIP's OpenAI stats, DINOv2's ImageNet stats), else 0.5/0.5 (inline
    towers and towers saved without ``preprocessor_config.json``)."""
    if _is_inline(spec):
        return ImageStats()
    from transformers import AutoImageProcessor

    try:
        return ImageStats.of(AutoImageProcessor.from_pretrained(str(spec)))
    except (OSError, ValueError, AttributeError):  # no (usable) image processor saved with it
        return ImageStats()


def load_text_backbone(spec: BackboneSpec, vocab_size: int | None = None) -> PreTrainedModel:
    """Causal LM from a hub id / directory or an inline config (needs `vocab_size`)."""
    if _is_inline(spec):
        if vocab_size is None:
            raise ValueError("an inline LM config needs the tokenizer's vocab_size")
        return LlamaForCausalLM(tiny_lm_config(vocab_size, **spec))
    return _from_pretrained_whole(AutoModelForCausalLM, spec)


def backbone_class(config) -> type[PreTrainedModel]:
    """The class `load_vision_backbone` / `load_text_backbone` would build for ``config``."""
    if getattr(config, "vision_config", None) is not None and not config.model_type.endswith("vision_model"):
        return CLIPVisionModel if config.model_type == "clip" else SiglipVisionModel
    if config.model_type.endswith("vision_model"):
        return {"clip_vision_model": CLIPVisionModel}.get(config.model_type, SiglipVisionModel)
    return AutoModelForCausalLM._model_mapping[type(config)]


def meta_backbone(path: str | Path) -> PreTrainedModel:
    """A backbone at full size from its config.json alone, on the meta device (no weights,
    no memory): for checking that a large recipe assembles and has the right size."""
    import torch

    config = AutoConfig.from_pretrained(str(path))
    cls = backbone_class(config)
    if cls in (SiglipVisionModel, CLIPVisionModel) and hasattr(config, "vision_config"):
        config = config.vision_config
    with torch.device("meta"):
        return cls(config)


def images_to_tensor(images: Sequence[Image.Image], size: int, mean: Sequence[float] = IMAGE_MEAN,
                     std: Sequence[float] = IMAGE_STD) -> torch.Tensor:
    """Resize to `size` x `size` and normalise as the VLM's processor does: (x/255 - mean) / std
    per channel (the defaults map to [-1, 1], what this project's own towers are trained on)."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)) for im in images])
    pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
