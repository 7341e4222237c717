"""The one factory from a recipe's ``model:`` section to a VLM, its processor and tokenizer.

A new VLM is assembled from backbone directories (hub layout: ``config.json``, weights, and
for the LM its tokenizer files) or inline tower configs; a later stage starts from a saved
version instead. Saved versions are stock transformers files (safetensors + config +
processor): `load_vlm` is plain `AutoModelForImageTextToText` + `AutoProcessor`.

Image normalisation travels with the model: a new VLM's processors take the mean/std of the
image processor saved with its vision tower (0.5/0.5 without one: this project's own towers),
a later stage's those of its parent's saved processor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from components.model.architectures import spec, spec_of
from components.model.backbones import (
    IMAGE_MEAN,
    IMAGE_STD,
    BackboneSpec,
    ImageStats,
    images_to_tensor,
    load_text_backbone,
    load_vision_backbone,
    vision_image_stats,
)
from components.model.spec import REGISTERED, ModelSpec
from components.model.tokens import prepare_tokenizer

hf_logging.disable_progress_bar()

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # a stage's `dtype`


def backbone_dir(name: str, registered: Mapping[str, str | Path]) -> str:
    """A backbone spec as a directory or hub id: ``registered:<name>`` looked up in
    ``registered`` (name -> directory, from the registry), anything else as given."""
    if not name.startswith(REGISTERED):
        return name
    key = name.removeprefix(REGISTERED)
    if key not in registered:
        raise LookupError(f"backbone {key!r} is not registered yet: run `vlmforge backbones` first")
    return str(registered[key])


def assemble(model_spec: ModelSpec, vision: PreTrainedModel, lm: PreTrainedModel,
             tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> PreTrainedModel:
    """The VLM of ``model_spec.architecture`` with both backbones' weights copied in exactly."""
    return spec(model_spec.architecture).assemble(vision, lm, tokenizer, model_spec, seed)


def _vision_spec(model_spec: ModelSpec, registered: Mapping[str, str | Path]) -> BackboneSpec:
    m = model_spec
    return m.vision_inline if m.vision == "inline" else backbone_dir(m.vision, registered)


def vision_stats(model_spec: ModelSpec, registered: Mapping[str, str | Path]) -> ImageStats:
    """The image normalisation of a new VLM: its vision tower's own (`vision_image_stats`)."""
    return vision_image_stats(_vision_spec(model_spec, registered))


def build_vlm(model_spec: ModelSpec, registered: Mapping[str, str | Path], *, seed: int = 0,
              feature_images: list | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh VLM from the recipe's backbones, with the LM's tokenizer made VLM-ready; its
    processors normalise with `vision_stats` (what `build_stage_model` passes them).

    ``feature_images``: training images for ``standardize_features`` (that many are used)."""
    m = model_spec
    vision_spec = _vision_spec(m, registered)
    vision, stats = load_vision_backbone(vision_spec), vision_image_stats(vision_spec)
    text_dir = backbone_dir(m.text, registered)
    lm = load_text_backbone(text_dir)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_dir), lm)
    if m.fusion_vision is not None:
        model = _sphinx(m, vision, stats, lm, tokenizer, backbone_dir(m.fusion_vision, registered), seed)
    else:
        model = assemble(m, vision, lm, tokenizer, seed=seed)
    if m.standardize_features:
        if not feature_images:
            raise ValueError("standardize_features needs training images")
        pixels = images_to_tensor(feature_images[: m.standardize_features], vision.config.image_size,
                                  stats.mean, stats.std)
        spec_of(model).standardize(model, pixels)
    return model, tokenizer


def _sphinx(m: ModelSpec, vision, stats: ImageStats, lm, tokenizer, secondary_dir: str, seed: int):
    """LLaVA over ``vision`` fused per patch with a second tower (SPHINX). The pixels come
    normalised for ``vision`` (``stats``); the second tower renormalises them to its own
    stats (`vision_image_stats`: 0.5/0.5 without an image processor config) when they differ."""
    from components.model.fusion import assemble_sphinx_llava

    secondary, own = load_vision_backbone(secondary_dir), vision_image_stats(secondary_dir)
    mean, std = (None, None) if own == stats else (list(own.mean), list(own.std))
    return assemble_sphinx_llava(vision, secondary, lm, tokenizer, seed=seed,
                                 secondary_mean=mean, secondary_std=std,
                                 primary_mean=list(stats.mean), primary_std=list(stats.std))


def processor_for(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, longest_edge: int, *,
                  image_mean: Sequence[float] = IMAGE_MEAN, image_std: Sequence[float] = IMAGE_STD):
    """The processor for one stage at ``longest_edge`` px, matching the model's architecture,
    normalising images with its vision tower's ``image_mean``/``image_std``."""
    return spec_of(model).processor(model, tokenizer, longest_edge,
                                    image_mean=image_mean, image_std=image_std)


def build_stage_model(model_spec: ModelSpec, *, seed: int, parent_dir: str | Path | None,
                      registered: Mapping[str, str | Path], longest_edge: int,
                      unfreeze: Mapping[str, str], lora_rank: int,
                      feature_images: list | None = None,
                      dtype: str = "fp32") -> tuple[PreTrainedModel, Any, dict[str, int]]:
    """The model a training stage starts from (the saved parent version, or assembled from
    the backbones when ``parent_dir`` is None) in ``dtype`` (fp32 / bf16: a saved parent is
    loaded in it, a new VLM cast to it), its processor at the stage's resolution, and
    the trainable parameter count per group after the stage's unfreezing. The processor
    normalises images as the vision tower expects: the backbone's own image processor stats for
    a new VLM, the parent's saved processor's otherwise."""
    from components.model.freeze import apply_unfreezing

    if parent_dir is None:
        model, tokenizer = build_vlm(model_spec, registered, seed=seed, feature_images=feature_images)
        model = model.to(TORCH_DTYPES[dtype])
        stats = vision_stats(model_spec, registered)
    else:
        model, saved = load_vlm(parent_dir, dtype=dtype)
        tokenizer, stats = saved.tokenizer, ImageStats.of(saved.image_processor)
    processor = processor_for(model, tokenizer, longest_edge, image_mean=stats.mean, image_std=stats.std)
    return model, processor, apply_unfreezing(model, dict(unfreeze), lora_rank=lora_rank)


def load_vlm(path: str | Path, dtype: str = "fp32"):
    """A saved VLM (in ``dtype``, whatever it was saved in) and its processor, via the
    standard Auto classes."""
    return (AutoModelForImageTextToText.from_pretrained(path, dtype=TORCH_DTYPES[dtype]),
            AutoProcessor.from_pretrained(path))


def save_vlm(model: PreTrainedModel, processor, out_dir: Path) -> Path:
    """Safetensors + config + processor: loadable with plain transformers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
