"""The backbones stage: the tiny recipe's own pre-trained vision tower and LM.

Each backbone is registered as a model of its own (`vision-tiny`, `lm-tiny`) and
cached on (its recipe section, data version). Recipes on real hardware name hub
backbones instead and have no `backbones:` section.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from transformers import CLIPVisionConfig, SiglipConfig

import registry
from components.data.version import DataVersion
from components.model.backbones import (
    load_text_backbone,
    tiny_text_tower_config,
    tiny_vision_config,
)
from components.recipe import Recipe, backbone_cache_key
from components.training.backbones import (
    corpus_chat_texts,
    image_caption_pairs,
    text_length,
    train_language_model,
    train_vision_tower,
    zero_shot_accuracy,
)
from flows.lineage import StepLogger, dataset_tags, git_sha, log_data_inputs


@dataclass
class BackboneOutcome:
    name: str
    version: str
    run_id: str
    cached: bool
    seconds: float
    trainable: int
    metrics: dict[str, float] = field(default_factory=dict)


def _cached(name: str, key: str) -> BackboneOutcome | None:
    version = registry.find_version(name, {"cache_key": key})
    if version is None:
        return None
    info = registry.version_info(name, version)
    run = registry.get_run(info["run_id"])
    return BackboneOutcome(name, version, info["run_id"], True, 0.0,
                           int(run["params"].get("trainable_params", 0)), run["metrics"])


def _register(spec, key: str, data: DataVersion, run_id: str, metrics: dict[str, float],
              model, tokenizer=None) -> BackboneOutcome:
    """Log the backbone's params and metrics, save it (with its tokenizer) and register it."""
    trainable = sum(p.numel() for p in model.parameters())
    registry.log_params({"backbone": spec.model_dump(mode="json"), "trainable_params": trainable})
    registry.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        version = registry.register_hf_model(
            Path(tmp), spec.registered_model, run_id=run_id,
            tags={"cache_key": key, "data_version": data.version, "git_sha": git_sha(),
                  "stage": "backbones", **dataset_tags(data)})
    return BackboneOutcome(spec.registered_model, version, run_id, False, metrics["seconds"],
                           trainable, metrics)


@task(name="train-vision-tower")
def vision_task(recipe: Recipe, data: DataVersion, parent_run_id: str | None, force: bool) -> BackboneOutcome:
    from transformers import AutoTokenizer

    spec = recipe.backbones.vision
    key = backbone_cache_key(recipe, spec, data.version)
    if not force and (hit := _cached(spec.registered_model, key)):
        return hit
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer)
    triples = image_caption_pairs(data.shards, "train", recipe.seed)
    if not triples:
        raise ValueError(f"{spec.registered_model}: no image-caption pairs in the train split: the "
                         "tiny vision tower trains on captions (a synthetic source or a caption dataset)")
    tower = dict(spec.config)
    clip = tower.pop("model_type", "siglip_vision_model") == "clip_vision_model"
    text_tower = tiny_text_tower_config(len(tokenizer), **spec.text_tower)
    if "max_position_embeddings" not in spec.text_tower:
        text_tower.max_position_embeddings = text_length(
            tokenizer, [t for _, c, n in triples for t in (c, n)], text_tower.max_position_embeddings)
    config = SiglipConfig(text_config=text_tower.to_dict(), vision_config=tiny_vision_config(**tower).to_dict())
    with registry.start_run(spec.registered_model, parent_run_id=parent_run_id,
                            tags={"stage": "backbones", "backbone": "vision"}) as run_id:
        log_data_inputs(data, run_id)
        images, captions, negatives = zip(*triples, strict=True)
        vision, result, dual = train_vision_tower(
            images, captions, negatives if spec.hard_negatives else None, tokenizer, config,
            spec.train, seed=recipe.seed, patch_keep=spec.patch_keep,
            clip_vision=CLIPVisionConfig(**tower) if clip else None,
            on_log=StepLogger(spec.train.steps, f"{recipe.name}-{spec.registered_model}"))
        test = image_caption_pairs(data.shards, "test")[:200]
        test_caps = [c for _, c, _ in test]
        metrics = {
            "loss_first": result.mean_loss(first=True), "loss_last": result.mean_loss(first=False),
            "seconds": time.perf_counter() - start,
        }
        if test:
            metrics["zero_shot_caption_retrieval"] = zero_shot_accuracy(
                dual, [i for i, _, _ in test], test_caps, sorted(set(test_caps)), tokenizer)
        registry.log_params({"pairs": len(triples)})
        return _register(spec, key, data, run_id, metrics, vision)


@task(name="train-language-model")
def lm_task(recipe: Recipe, data: DataVersion, parent_run_id: str | None, force: bool) -> BackboneOutcome:
    from transformers import AutoTokenizer

    spec = recipe.backbones.text
    key = backbone_cache_key(recipe, spec, data.version)
    if not force and (hit := _cached(spec.registered_model, key)):
        return hit
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer)
    lm = load_text_backbone(spec.config, vocab_size=len(tokenizer))
    texts = corpus_chat_texts(data.shards, tokenizer)
    with registry.start_run(spec.registered_model, parent_run_id=parent_run_id,
                            tags={"stage": "backbones", "backbone": "text"}) as run_id:
        log_data_inputs(data, run_id)
        result = train_language_model(texts, tokenizer, lm, spec.train, seed=recipe.seed,
                                      block=spec.block,
                                      on_log=StepLogger(spec.train.steps,
                                                        f"{recipe.name}-{spec.registered_model}"))
        metrics = {"loss_first": result.mean_loss(first=True), "loss_last": result.mean_loss(first=False),
                   "seconds": time.perf_counter() - start}
        return _register(spec, key, data, run_id, metrics, lm, tokenizer)


@flow(name="backbones")
def backbones_flow(recipe: Recipe, data: DataVersion, parent_run_id: str | None = None,
                   force: bool = False) -> list[BackboneOutcome]:
    """Train (or reuse) the tiny vision tower and LM; nothing to do for hub backbones."""
    if recipe.backbones is None:
        get_run_logger().info("recipe names pre-trained backbones: nothing to train")
        return []
    outcomes = [vision_task(recipe, data, parent_run_id, force), lm_task(recipe, data, parent_run_id, force)]
    for o in outcomes:
        get_run_logger().info("%s v%s %s", o.name, o.version, "(cached)" if o.cached else "")
    return outcomes


def registered_backbones(recipe: Recipe, data: DataVersion) -> list[BackboneOutcome]:
    """The backbone versions the backbones stage registered for this recipe on ``data``
    (without training them)."""
    if recipe.backbones is None:
        return []
    found = []
    for spec in (recipe.backbones.vision, recipe.backbones.text):
        version = registry.find_version(spec.registered_model,
                                        {"cache_key": backbone_cache_key(recipe, spec, data.version)})
        if version is None:
            raise LookupError(f"backbone {spec.registered_model!r} not trained on data "
                              f"{data.version}: run `vlmforge backbones --recipe ...` first")
        run_id = registry.version_info(spec.registered_model, version)["run_id"]
        found.append(BackboneOutcome(spec.registered_model, version, run_id, True, 0.0, 0))
    return found
