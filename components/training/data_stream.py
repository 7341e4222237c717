"""Streams of training batches from webdataset shards: shuffled, encoded, collated.

Samples that cannot fit `max_length` with all their image tokens are dropped and
counted (`dropped`), never truncated.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from components.data.sample import Sample
from components.data.shards import read_samples
from components.training.batching import ChatEncoder, Encoded, collate


def shard_paths(shards_dir: Path, split: str, sources: list[str]) -> list[Path]:
    """The shards of `split` written for `sources`; an error if a source has none."""
    paths = []
    for source in sources:
        found = sorted((Path(shards_dir) / split).glob(f"{source}-*.tar"))
        if not found:
            raise FileNotFoundError(f"no {split} shards for source {source!r} in {shards_dir}")
        paths.extend(found)
    return paths


class SampleStream:
    """Endless shuffled samples: shard order reshuffled per epoch plus a shuffle buffer."""

    def __init__(self, paths: list[Path], seed: int, buffer: int = 1000):
        self.paths, self.buffer = list(paths), buffer
        self.rng = random.Random(seed)
        self.epoch = 0

    def __iter__(self) -> Iterator[Sample]:
        while True:
            order = self.paths[:]
            self.rng.shuffle(order)
            pool: list[Sample] = []
            for sample in read_samples(order):
                pool.append(sample)
                if len(pool) >= self.buffer:
                    yield pool.pop(self.rng.randrange(len(pool)))
            self.rng.shuffle(pool)
            yield from pool
            self.epoch += 1


class ChatBatches:
    """Collated supervised batches (assistant-only labels)."""

    def __init__(self, samples: SampleStream, encoder: ChatEncoder, batch_size: int):
        self.samples, self.encoder, self.batch_size = samples, encoder, batch_size
        self.dropped = 0
        self.pad_id = encoder.tokenizer.pad_token_id

    def encode(self, sample: Sample) -> list[Encoded] | None:
        enc = self.encoder.encode(sample.record["messages"], sample.images)
        return None if enc is None else [enc]

    def __iter__(self) -> Iterator[dict]:
        items: list[Encoded] = []
        for sample in self.samples:
            enc = self.encode(sample)
            if enc is None:
                self.dropped += 1
                continue
            items.extend(enc)
            if len(items) >= self.batch_size * self.rows_per_sample:
                yield self.collate(items)
                items = []

    rows_per_sample = 1

    def collate(self, items: list[Encoded]) -> dict:
        return collate(items, self.pad_id)


class PreferenceBatches(ChatBatches):
    """Batches of [chosen..., rejected...] rows for preference optimisation."""

    rows_per_sample = 2

    def encode(self, sample: Sample) -> list[Encoded] | None:
        rec = sample.record
        chosen = self.encoder.encode_with_answer(rec["messages"], sample.images, rec["chosen"])
        rejected = self.encoder.encode_with_answer(rec["messages"], sample.images, rec["rejected"])
        if chosen is None or rejected is None:
            return None
        return [chosen, rejected]

    def collate(self, items: list[Encoded]) -> dict:
        return collate(items[0::2] + items[1::2], self.pad_id)
