"""Load and save the models a stage works on: backbones, assembled VLMs, registry versions."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
from transformers.utils import logging as hf_logging

import registry
from components.model.architectures import assemble, processor_for
from components.model.assembly import standardize_image_features
from components.model.backbones import load_text_backbone, load_vision_backbone
from components.model.fusion import assemble_sphinx_llava  # also registers the fused tower type
from components.model.tokens import prepare_tokenizer
from components.recipe import Recipe
from components.training.backbones import images_to_tensor

hf_logging.disable_progress_bar()
REGISTERED = "registered:"


def backbone_path(spec: str, backbone_versions: dict[str, str]) -> str:
    """A `registered:<name>` spec resolved to its registry directory; other specs as given."""
    if not spec.startswith(REGISTERED):
        return spec
    name = spec.removeprefix(REGISTERED)
    if name not in backbone_versions:
        raise LookupError(f"backbone {name!r} is not registered yet: run `vlmforge backbones` first")
    return str(registry.hf_model_dir(name, backbone_versions[name]))


def assemble_from_backbones(recipe: Recipe, backbone_versions: dict[str, str]):
    """A fresh VLM from the recipe's backbones, with the LM's tokenizer made VLM-ready."""
    m = recipe.model
    vision_dir = m.vision_inline if m.vision == "inline" else backbone_path(m.vision, backbone_versions)
    text_dir = backbone_path(recipe.model.text, backbone_versions)
    vision = load_vision_backbone(vision_dir)
    lm = load_text_backbone(text_dir)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_dir), lm)
    if m.fusion_vision is not None:
        model = sphinx_from_backbones(recipe, vision, lm, tokenizer, backbone_versions)
    else:
        model = assemble(m.architecture, vision, lm, tokenizer, seed=recipe.seed,
                         scale_factor=m.scale_factor, connector_init=m.connector_init, n_latents=m.resampler_latents,
                         resampler_depth=m.resampler_depth, resampler_heads=m.resampler_heads,
                         resampler_head_dim=m.resampler_head_dim,
                         cross_layer_interval=m.cross_layer_interval)
    if recipe.model.standardize_features:
        if m.architecture not in ("idefics3", "idefics2"):
            raise ValueError("standardize_features applies to idefics3/idefics2 towers only")
        images = training_images(recipe, recipe.model.standardize_features)
        standardize_image_features(model, images_to_tensor(images, vision.config.image_size))
    return model, tokenizer


def sphinx_from_backbones(recipe: Recipe, vision, lm, tokenizer, backbone_versions: dict[str, str]):
    """LLaVA over `model.vision` fused per patch with `model.fusion_vision` (SPHINX); the second
    tower gets its own normalisation when its directory has an image processor config."""
    from transformers import AutoImageProcessor

    if recipe.model.architecture != "llava":
        raise ValueError("fusion_vision (SPHINX) is implemented for architecture: llava")
    spec = backbone_path(recipe.model.fusion_vision, backbone_versions)
    secondary = load_vision_backbone(spec)
    mean = std = None
    try:
        stats = AutoImageProcessor.from_pretrained(spec)
        mean, std = list(stats.image_mean), list(stats.image_std)
    except (OSError, ValueError, AttributeError):
        pass  # no image processor saved with the tower: it sees the primary's pixels
    return assemble_sphinx_llava(vision, secondary, lm, tokenizer, seed=recipe.seed,
                                 secondary_mean=mean, secondary_std=std)


def training_images(recipe: Recipe, n: int) -> list:
    """Up to `n` training images, spread evenly over the first stage's image sources."""
    from itertools import islice

    from components.data.shards import read_samples
    from components.training.data_stream import shard_paths
    from flows.data import workspace_for

    shards = workspace_for(recipe) / "data" / "shards"
    sources = [s for s in recipe.stages[0].sources if s != "text"]
    images = []
    for source in sources:
        samples = read_samples(shard_paths(shards, "train", [source]))
        images += [s.images[0] for s in islice(samples, n // len(sources)) if s.images]
    return images


def stage_model(recipe: Recipe, stage, parent: str, backbone_versions: dict[str, str]):
    """The model a training stage starts from (assembled from the backbones, or the parent
    version), its processor at the stage's resolution, and the trainable count per group."""
    from components.model.freeze import apply_unfreezing

    if parent.startswith("backbones:"):
        model, tokenizer = assemble_from_backbones(recipe, backbone_versions)
    else:
        model, saved = load_version(recipe.registered_model, parent)
        tokenizer = saved.tokenizer
    processor = processor_for(model, tokenizer, stage.longest_edge)
    return model, processor, apply_unfreezing(model, stage.unfreeze, lora_rank=stage.lora_rank)


def load_version(name: str, version: str):
    """A registered VLM version and its saved processor, via the standard Auto classes."""
    path = registry.hf_model_dir(name, version)
    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


def save_vlm(model, processor, out_dir: Path) -> Path:
    """Safetensors + config + processor: loadable with plain transformers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
