"""Load and save the models a stage works on: backbones, assembled VLMs, registry versions."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
from transformers.utils import logging as hf_logging

import registry
from components.model.assembly import assemble_idefics3, standardize_image_features
from components.model.backbones import load_text_backbone, load_vision_backbone
from components.model.processor import build_processor
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
    vision_dir = backbone_path(recipe.model.vision, backbone_versions)
    text_dir = backbone_path(recipe.model.text, backbone_versions)
    vision = load_vision_backbone(vision_dir)
    lm = load_text_backbone(text_dir)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_dir), lm)
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=recipe.model.scale_factor,
                              seed=recipe.seed)
    if recipe.model.standardize_features:
        images = training_images(recipe, recipe.model.standardize_features)
        standardize_image_features(model, images_to_tensor(images, vision.config.image_size))
    return model, tokenizer


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
    return model, processor, apply_unfreezing(model, stage.unfreeze)


def load_version(name: str, version: str):
    """A registered VLM version and its saved processor, via the standard Auto classes."""
    path = registry.hf_model_dir(name, version)
    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


def processor_for(model, tokenizer, longest_edge: int):
    """The stage's processor: tiles at the vision tower's native size, `longest_edge` overall."""
    vc = model.config.vision_config
    return build_processor(tokenizer, tile_size=vc.image_size, longest_edge=longest_edge,
                           patch_size=vc.patch_size, scale_factor=model.config.scale_factor)


def save_vlm(model, processor, out_dir: Path) -> Path:
    """Safetensors + config + processor: loadable with plain transformers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
