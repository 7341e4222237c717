"""Helpers shared by every architecture: exact weight copies and seeded construction."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def copy_exact(target: torch.nn.Module, source_state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``source_state`` into ``target``; every key on both sides must match."""
    missing, unexpected = target.load_state_dict(source_state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what} weights do not match: missing={missing[:5]} unexpected={unexpected[:5]}")


def vision_tower_state(vision: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A SigLIP/CLIP vision model's transformer weights, without its pooling head or prefix."""
    state = {k.removeprefix("vision_model."): v for k, v in vision.state_dict().items()}
    return {k: v for k, v in state.items() if not k.startswith("head.")}


@contextmanager
def seeded(seed: int):
    """Initialise new layers from ``seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_vocab(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if lm.config.vocab_size < len(tokenizer):
        raise ValueError(f"LM vocab {lm.config.vocab_size} < tokenizer size {len(tokenizer)}")


def set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id


@torch.no_grad()
def scale_to_embeddings(linear: torch.nn.Linear, lm: PreTrainedModel, generator: torch.Generator) -> None:
    """Init a projection into the LM so its outputs start at the norm of the word embeddings."""
    torch.nn.init.normal_(linear.weight, std=1.0 / linear.in_features**0.5, generator=generator)
    emb = lm.get_input_embeddings().weight
    linear.weight.mul_(1.0 if emb.is_meta else emb.std().item())  # meta: sizing only, no values
    if linear.bias is not None:
        linear.bias.zero_()


@torch.no_grad()
def pool_init(linear: torch.nn.Linear, patch_dim: int, lm: PreTrainedModel, generator: torch.Generator) -> None:
    """Init a pixel-shuffle projection as "mean over the merged patches, then one projection".

    The input is ``k`` patch features of ``patch_dim`` concatenated; every block gets the same
    random projection / ``k``, so an object gives the same image token wherever it sits among
    the merged patches (measured against independent blocks in the README's "Known limits").
    """
    k, rem = divmod(linear.in_features, patch_dim)
    if rem:
        raise ValueError(f"projection input {linear.in_features} is not a multiple of {patch_dim}")
    block = torch.nn.Linear(patch_dim, linear.out_features, bias=False)
    scale_to_embeddings(block, lm, generator)
    linear.weight.copy_(block.weight.repeat(1, k) / k)
    if linear.bias is not None:
        linear.bias.zero_()
