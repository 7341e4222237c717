"""A stage encodes each distinct sample once.

A stage sees each training sample several times (every epoch), and encoding it (chat
template, tokenizer, the processor's image resizing, tiling and normalising) is pure: the
same record and images give the same rows. `EncodeMemo` keeps the rows of each sample, keyed
by its key and a digest of its record (a stream that rewrites a record, such as align's
corrected caption pairs, gets new rows), so a repeat costs a lookup. The rows of one sample
share a single pixel tensor when their images are equal (split turns: one row per question
about the same image).

It holds at most `max_bytes` of rows: past that it stops adding and keeps serving what it
holds. Rows are read, never written, by the collators, so sharing them is safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from components.budget import budget_bytes as env_budget
from components.data.sample import Sample
from components.model.chat import Encoded

DEFAULT_MB = 1024
ENV = "VLMFORGE_ENCODE_MEMO_MB"  # the byte budget in MiB; 0 turns the memo off

Rows = list[Encoded] | None  # a sample's rows; None when it does not fit max_length


@dataclass
class MemoStats:
    hits: int = 0
    misses: int = 0
    bytes: int = 0

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics; none when no sample went through the memo."""
        seen = self.hits + self.misses
        if not seen:
            return {}
        return {"encode_memo_hit_rate": self.hits / seen, "encode_memo_mb": self.bytes / 2**20}


def budget_bytes() -> int:
    """`VLMFORGE_ENCODE_MEMO_MB` MiB (default 1024)."""
    return env_budget(ENV, DEFAULT_MB)


def _share_pixels(rows: list[Encoded]) -> None:
    """Point rows whose pixels equal an earlier row's at that row's tensors."""
    for i, row in enumerate(rows):
        for prev in rows[:i]:
            if (row.pixel_values is not None and prev.pixel_values is not None
                    and row.pixel_values.shape == prev.pixel_values.shape
                    and torch.equal(row.pixel_values, prev.pixel_values)):
                row.pixel_values, row.pixel_attention_mask = prev.pixel_values, prev.pixel_attention_mask
                break


def _nbytes(rows: Rows) -> int:
    if not rows:
        return 64
    tensors = {id(t): t for r in rows for t in (r.pixel_values, r.pixel_attention_mask) if t is not None}
    return (sum(t.numel() * t.element_size() for t in tensors.values())
            + sum(16 * len(r.input_ids) for r in rows))  # two lists of Python ints per row


class EncodeMemo:
    """Rows by (sample key, record digest), up to `max_bytes` (default: `budget_bytes()`)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = budget_bytes() if max_bytes is None else max_bytes
        self.rows: dict[tuple[str, bytes], Rows] = {}
        self.stats = MemoStats()

    def __call__(self, sample: Sample, encode: Callable[[Sample], Rows]) -> Rows:
        """The sample's rows: remembered, or `encode(sample)` (remembered while the budget lasts)."""
        if not self.max_bytes:
            return encode(sample)
        record = json.dumps(sample.record, sort_keys=True, default=str).encode()
        key = (sample.key, hashlib.blake2b(record, digest_size=16).digest())
        if key in self.rows:
            self.stats.hits += 1
            return self.rows[key]
        self.stats.misses += 1
        rows = encode(sample)
        if rows:
            _share_pixels(rows)
        size = _nbytes(rows)
        if self.stats.bytes + size <= self.max_bytes:
            self.rows[key] = rows
            self.stats.bytes += size
        return rows
