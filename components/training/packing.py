"""Sequence packing: several conversations in one row, attention kept inside each.

A packed row is its conversations' tokens back to back. Position ids restart at 0
with every conversation, so rotary positions are those the conversation has alone,
and attention is block-diagonal causal: a token sees earlier tokens of its own
conversation only. With transformers 5 the block-diagonal mask is passed as a 4-D
`attention_mask`, which `create_causal_mask` uses as-is (eager and sdpa, CPU and
GPU); flash-attention instead reads the boundaries from the restarted position ids
(varlen) and takes no mask. Labels at a boundary need no care: the first token of a
conversation is never labelled, so no conversation learns to predict the next one.

The tail padding of a row is one more "conversation" (its position ids restart at
0) with no labels, so every query attends to at least itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from components.model.chat import IGNORE, Encoded
from components.model.logps import labelled_token_logps


class RowPacker:
    """Online first fit: each item goes to the first of at most `rows` rows with room for it."""

    def __init__(self, capacity: int, rows: int | None = None):
        self.capacity, self.rows = capacity, rows
        self.groups: list[list[int]] = []
        self.used: list[int] = []
        self.count = 0

    def add(self, length: int) -> bool:
        """Place the next item (index `self.count`); False, placing nothing, when no row can take it."""
        if length > self.capacity:
            raise ValueError(f"item of {length} tokens exceeds the row capacity {self.capacity}")
        row = next((r for r, u in enumerate(self.used) if u + length <= self.capacity), None)
        if row is None:
            if self.rows is not None and len(self.groups) >= self.rows:
                return False
            self.groups.append([])
            self.used.append(0)
            row = len(self.groups) - 1
        self.groups[row].append(self.count)
        self.used[row] += length
        self.count += 1
        return True


def first_fit(lengths: Iterable[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of at most `capacity` tokens, first fit in arrival order."""
    packer = RowPacker(capacity)
    for n in lengths:
        packer.add(n)
    return packer.groups


def collate_packed(rows: list[list[Encoded]], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch of packed rows: ids, labels, per-conversation `position_ids`, a 2-D
    `attention_mask` (1 on real tokens: what the loop counts) and the rows' images in order."""
    lengths = [sum(len(it.input_ids) for it in row) for row in rows]
    longest = max(lengths)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(rows), longest), dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for it in row:
            n = len(it.input_ids)
            ids[r, at : at + n] = torch.tensor(it.input_ids)
            labels[r, at : at + n] = torch.tensor(it.labels)
            positions[r, at : at + n] = torch.arange(n)
            at += n
        attn[r, :at] = 1
        positions[r, at:] = torch.arange(longest - at)
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels, "position_ids": positions}
    row_images = [[it for it in row if it.pixel_values is not None] for row in rows]
    if any(row_images):
        n_img = max(sum(it.pixel_values.shape[0] for it in row) for row in row_images)
        _, c, h, w = next(it for row in row_images for it in row).pixel_values.shape
        pixels = torch.zeros((len(rows), n_img, c, h, w))
        pmask = torch.zeros((len(rows), n_img, h, w), dtype=torch.bool)
        for r, row in enumerate(row_images):
            k = 0
            for it in row:
                m = it.pixel_values.shape[0]
                pixels[r, k : k + m] = it.pixel_values
                pmask[r, k : k + m] = it.pixel_attention_mask.bool()
                k += m
        batch["pixel_values"] = pixels
        batch["pixel_attention_mask"] = pmask
    return batch


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Which conversation of its row each token belongs to: a new one wherever the position restarts at 0."""
    return (position_ids == 0).long().cumsum(-1)


def block_causal_mask(position_ids: torch.Tensor, *, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, 1, L, L) mask: query q may attend key k iff k <= q and both are in the same conversation.

    Boolean (True = attend) for sdpa/flex; with `additive_dtype`, 0 / dtype-min for eager attention.
    """
    seg = segment_ids(position_ids)
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (seg.unsqueeze(-1) == seg.unsqueeze(-2)) & causal
    allowed = allowed.unsqueeze(1)
    if additive_dtype is None:
        return allowed
    zero = torch.zeros((), dtype=additive_dtype, device=position_ids.device)
    return torch.where(allowed, zero, torch.finfo(additive_dtype).min)


def attention_implementation(model: nn.Module) -> str:
    """The text model's attention implementation (through DDP / compile wrappers)."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    return str(getattr(text, "_attn_implementation", None) or getattr(config, "_attn_implementation", "sdpa"))


def packed_model_inputs(model: nn.Module, batch: dict) -> dict:
    """The forward inputs of a packed batch: the 2-D mask replaced by the block-diagonal one
    (or dropped for flash-attention, which reads boundaries from `position_ids`)."""
    inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
    impl = attention_implementation(model)
    if impl.startswith("flash") or "paged" in impl:
        return inputs
    if impl == "eager":
        inputs["attention_mask"] = block_causal_mask(batch["position_ids"], additive_dtype=torch.float32)
    else:
        inputs["attention_mask"] = block_causal_mask(batch["position_ids"])
    return inputs


def packed_lm_objective(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss on the labelled tokens of a packed batch."""
    inputs = packed_model_inputs(model, batch)
    logps, _ = labelled_token_logps(model, inputs, inputs.pop("labels"))
    return -logps.mean(), {}


def padding_fraction(lengths: list[int], batch_size: int, max_length: int, packing: bool) -> float:
    """Share of padding tokens in the batches the stream builds from `lengths` (in order).

    Without packing a batch is `batch_size` samples padded to its longest; with
    packing, `batch_size` rows of at most `max_length` tokens filled first fit (as
    `ChatBatches` does), padded to the longest row. A trailing incomplete batch counts too.
    """
    real = sum(lengths)
    padded = 0
    if packing:
        packer = RowPacker(max_length, batch_size)
        for n in lengths:
            if not packer.add(n):
                padded += max(packer.used) * len(packer.used)
                packer = RowPacker(max_length, batch_size)
                packer.add(n)
        if packer.used:
            padded += max(packer.used) * len(packer.used)
    else:
        for i in range(0, len(lengths), batch_size):
            chunk = lengths[i : i + batch_size]
            padded += max(chunk) * len(chunk)
    return 1 - real / padded if padded else 0.0
