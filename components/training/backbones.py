"""Pre-train the tiny unimodal backbones: a vision tower and a Llama LM.

No pre-trained weights can be downloaded for the tiny recipe, and a ViT trained
only through a VLM's language-model loss collapses (its image tokens become nearly
identical across images), so the vision tower is first trained contrastively on
image-caption pairs, as SigLIP is, with FLIP's random patch dropping as an option.
The tower is SigLIP-shaped, or CLIP-shaped (CLS token, pre-encoder LayerNorm: what the
Flamingo-style `idefics` architecture holds) with the same sigmoid loss.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipModel,
    SiglipVisionModel,
)

from components.data.decoded import cached_samples
from components.data.sample import message_text
from components.data.shards import shard_paths, split_sources
from components.data.synthetic import SOURCES
from components.data.synthetic.preference import hard_negative
from components.data.synthetic.scene import Scene, SceneObject, caption
from components.model.backbones import images_to_tensor
from components.recipe import TrainSettings
from components.training.loop import LogFn, LoopResult, train
from components.training.objectives import drop_patches, siglip_loss


class ContrastivePairs:
    """Shuffled mini-batches of (pixels, caption ids) held in memory."""

    def __init__(self, pixels: torch.Tensor, token_ids: torch.Tensor, negative_ids: torch.Tensor | None,
                 batch_size: int, seed: int):
        self.pixels, self.token_ids, self.batch_size = pixels, token_ids, batch_size
        self.negative_ids = negative_ids
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.pixels), generator=self.generator)
        for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
            idx = order[i : i + self.batch_size]
            ids = self.token_ids[idx]
            batch = {"pixel_values": self.pixels[idx], "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if self.negative_ids is not None:
                batch["negative_ids"] = self.negative_ids[idx]
            yield batch


class SiglipObjective:
    """SigLIP sigmoid loss, encoding only a random `patch_keep` fraction of patches (FLIP)."""

    def __init__(self, patch_keep: float = 1.0, seed: int = 0):
        self.patch_keep = patch_keep
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: SiglipModel, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        keep = self.patch_keep if model.training else 1.0
        image_emb = embed_images(model.vision_model, batch["pixel_values"], keep, self.generator)
        text_emb = model.text_model(input_ids=batch["input_ids"]).pooler_output
        negatives = batch.get("negative_ids")
        negative_emb = None if negatives is None else model.text_model(input_ids=negatives).pooler_output
        ids = batch["input_ids"]
        same_text = (ids[:, None, :] == ids[None, :, :]).all(-1)
        loss = siglip_loss(image_emb, text_emb, model.logit_scale, model.logit_bias, negative_emb,
                           same_text)
        return loss, {}


def embed_images(vision, pixel_values: torch.Tensor, patch_keep: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One embedding per image: a CLIP tower's CLS token, a SigLIP tower's attention-pooling
    head (or the mean of its patch tokens when it has none, so every patch token must carry
    what the caption says); only a random ``patch_keep`` fraction of patches is encoded."""
    tokens = vision.embeddings(pixel_values)
    if isinstance(vision, CLIPVisionModel):
        patches = drop_patches(tokens[:, 1:], patch_keep, generator)
        hidden = torch.cat([tokens[:, :1], patches], dim=1)
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(hidden)).last_hidden_state
        return vision.post_layernorm(hidden[:, 0])
    tokens = drop_patches(tokens, patch_keep, generator)
    hidden = vision.post_layernorm(vision.encoder(inputs_embeds=tokens).last_hidden_state)
    return vision.head(hidden) if getattr(vision, "use_head", False) else hidden.mean(dim=1)


def train_vision_tower(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    negatives: Sequence[str] | None,
    tokenizer: PreTrainedTokenizerBase,
    model_config: SiglipConfig,
    settings: TrainSettings,
    *,
    seed: int = 0,
    patch_keep: float = 1.0,
    clip_vision: CLIPVisionConfig | None = None,
    on_log: LogFn | None = None,
) -> tuple[SiglipVisionModel | CLIPVisionModel, LoopResult, SiglipModel]:
    """Train a dual-tower SigLIP on the pairs (plus one hard-negative caption per image, if
    given), its vision tower CLIP-shaped when ``clip_vision`` is given; return the vision
    tower as a standalone model."""
    torch.manual_seed(seed)
    model = SiglipModel(model_config)
    if clip_vision is not None:
        model.vision_model = CLIPVisionModel(clip_vision)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(10.0))
        model.logit_bias.fill_(-10.0)
    max_len = model_config.text_config.max_position_embeddings
    ids = _caption_ids(tokenizer, captions, max_len)
    negative_ids = None if negatives is None else _caption_ids(tokenizer, negatives, max_len)
    pixels = images_to_tensor(images, model.vision_model.config.image_size)
    batches = ContrastivePairs(pixels, ids, negative_ids, settings.batch_size, seed)
    result = train(model, batches, settings, SiglipObjective(patch_keep, seed), on_log, seed=seed)
    vision = (CLIPVisionModel(clip_vision) if clip_vision is not None
              else SiglipVisionModel(model_config.vision_config))
    vision.load_state_dict(model.vision_model.state_dict())
    return vision, result, model


def text_length(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], limit: int) -> int:
    """The contrastive text tower's sequence length: the longest of ``texts`` in tokens, at
    most ``limit``. Every caption pads to it and the tower pools the last position, so
    padding past the longest caption only costs compute (a third of the tiny recipe's text
    tower at the default limit of 48)."""
    ids = tokenizer(list(texts), add_special_tokens=False).input_ids
    return max(1, min(limit, max((len(i) for i in ids), default=1)))


def _caption_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int) -> torch.Tensor:
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                     add_special_tokens=False, return_tensors="pt").input_ids


@torch.no_grad()
def zero_shot_accuracy(model: SiglipModel, images: Sequence[Image.Image], captions: Sequence[str],
                       candidates: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> float:
    """Fraction of images whose best-matching candidate caption is their own caption."""
    model.eval()
    max_len = model.config.text_config.max_position_embeddings
    ids = _caption_ids(tokenizer, candidates, max_len)
    text = nn.functional.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    pixels = images_to_tensor(images, model.vision_model.config.image_size)
    img = nn.functional.normalize(embed_images(model.vision_model, pixels), dim=-1)
    best = (img @ text.T).argmax(-1)
    truth = torch.tensor([list(candidates).index(c) for c in captions])
    return (best == truth).float().mean().item()


class PackedText:
    """Texts tokenised and packed into fixed-length blocks for causal-LM training."""

    def __init__(self, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block: int,
                 batch_size: int, seed: int):
        ids: list[int] = []
        for t in texts:
            ids.extend(tokenizer(t, add_special_tokens=False).input_ids)
        n = len(ids) // block
        if n < batch_size:
            raise ValueError(f"only {n} blocks of {block} tokens for batch size {batch_size}")
        self.blocks = torch.tensor(ids[: n * block]).view(n, block)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.blocks), generator=self.generator)
        for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
            ids = self.blocks[order[i : i + self.batch_size]]
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def train_language_model(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    model: LlamaForCausalLM,
    settings: TrainSettings,
    *,
    seed: int = 0,
    block: int = 128,
    on_log: LogFn | None = None,
) -> LoopResult:
    """Causal-LM training on packed text blocks (the model is trained in place)."""
    torch.manual_seed(seed)
    batches = PackedText(texts, tokenizer, block, settings.batch_size, seed)
    return train(model, batches, settings, on_log=on_log, seed=seed)


PAIR_SOURCES = ("scenes_caption", "scenes_vqa", "ocr", "digits", "digits_large")  # synthetic sources with image texts
CHAT_SOURCES = ("scenes_caption", "scenes_vqa", "ocr", "digits", "digits_large", "text")  # the LM's synthetic corpus


def _sources(shards: Path, split: str, synthetic: tuple[str, ...]) -> list[str]:
    """``synthetic`` sources present in ``split``, then the recipe's datasets (shard stems
    that are no synthetic family), each in a fixed order."""
    present = split_sources(shards, split)
    return [s for s in synthetic if s in present] + [s for s in present if s not in SOURCES]


def image_caption_pairs(shards: Path, split: str, seed: int = 0):
    """(image, caption, hard negative) triples: scenes with their canonical caption and a
    binding-swapped or hallucinated one; OCR images with their text and its reversal; a
    dataset's captioned images with the caption's words in reverse order."""
    rng = random.Random(seed)
    triples = []
    sources = _sources(shards, split, PAIR_SOURCES)
    for s in cached_samples(shard_paths(shards, split, sources) if sources else []):
        rec = s.record
        if "objects" in rec:
            scene = Scene(tuple(SceneObject(**o) for o in rec["objects"]), (0, 0, 0))
            triples.append((s.images[0], caption(scene.objects), caption(hard_negative(scene, rng))))
        elif rec["task"] == "ocr":
            text = rec["answers"][0]
            triples.append((s.images[0], text, text[::-1]))
        elif rec["task"] == "caption" and len(s.images) == 1 and rec.get("answers"):
            text = rec["answers"][0]
            triples.append((s.images[0], text, " ".join(reversed(text.split()))))
    return triples


def corpus_chat_texts(shards: Path, tokenizer) -> list[str]:
    """Every training conversation rendered with the chat template, images left out."""
    texts = []
    for s in cached_samples(shard_paths(shards, "train", _sources(shards, "train", CHAT_SOURCES))):
        messages = [{"role": m["role"], "content": message_text(m)} for m in s.record["messages"]]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts
