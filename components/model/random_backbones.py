"""Backbone folders in hub layout with random weights, built locally from hub configs.

What a real-size run needs when the hub is out of reach: a SigLIP vision tower and a
Llama-style causal LM with a tokenizer of its own, laid out as the hub ships them
(``config.json`` + safetensors; the LM's folder also holds its tokenizer files), so the recipe
loads them through the same ``from_pretrained`` path as downloaded ones. The tokenizer is
SmolLM2-like: byte-level BPE trained on the given texts, ``<|endoftext|>`` as BOS and EOS, no
pad token, a ChatML template; the LM keeps its config's vocabulary size (rows past the
tokenizer are never used). `scaled` shrinks a config while keeping its structure (grid of
patches, heads per key-value head, tied embeddings, vocabulary) for fast tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from components.model.common import seeded

END = "<|endoftext|>"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def vision_part(config: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's config of a dual-tower (CLIP/SigLIP) hub config, else the config."""
    return dict(config.get("vision_config", config))


def scaled(config: dict[str, Any], *, width: int, layers: int) -> dict[str, Any]:
    """``config`` at ``width`` hidden units per head-group and ``layers`` layers: every head
    count, the patch grid, the vocabulary and the tie stay as they are; the MLP keeps its ratio."""
    heads = config["num_attention_heads"]
    hidden = heads * width
    ratio = config["intermediate_size"] / config["hidden_size"]
    return {**config, "hidden_size": hidden, "intermediate_size": int(hidden * ratio),
            "num_hidden_layers": layers}


def save_vision_tower(config: dict[str, Any], out: Path, seed: int = 0) -> Path:
    """A SigLIP vision tower of ``config`` with random weights, saved in hub layout."""
    fields = {k: v for k, v in vision_part(config).items() if k != "model_type"}
    with seeded(seed):
        SiglipVisionModel(SiglipVisionConfig(**fields)).save_pretrained(out)
    return out


def foreign_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A SmolLM2-like tokenizer trained on ``texts``: byte-level BPE, ``<|endoftext|>`` (id 0)
    as BOS/EOS, ChatML turn markers, no pad token."""
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END, "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END, eos_token=END,
                                        unk_token=END)
    tokenizer.chat_template = CHATML
    return tokenizer


def save_causal_lm(config: dict[str, Any], texts: Iterable[str], out: Path, *,
                   tokenizer_vocab: int = 2048, seed: int = 0) -> Path:
    """A Llama-style LM of ``config`` with random weights and its own tokenizer (trained on
    ``texts``, at most ``tokenizer_vocab`` entries), saved in hub layout."""
    tokenizer = foreign_tokenizer(texts, min(tokenizer_vocab, config["vocab_size"]))
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "torch_dtype")}
    fields.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with seeded(seed):
        lm = LlamaForCausalLM(LlamaConfig(**fields)).to(torch.float32)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_hub_backbones(vision: dict[str, Any], text: dict[str, Any], texts: Iterable[str],
                       root: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Both backbone folders under ``root`` (``vision/``, ``text/``): what a recipe's
    ``model.vision`` / ``model.text`` name."""
    return (save_vision_tower(vision, root / "vision", seed),
            save_causal_lm(text, texts, root / "text", seed=seed))
