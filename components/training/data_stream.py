"""Streams of training batches from webdataset shards: shuffled, encoded, collated.

Samples that cannot fit `max_length` with all their image tokens (and, for
preference pairs, the whole prompt and both answers) are skipped and counted
(`skipped`), never truncated.

Training samples the data's contamination stage quarantined (``data.contamination:
quarantine``: their images match an evaluation suite's) are skipped by every stream.

Text-only sources can be mixed in at a fixed ratio (`MixedSamples`), or every source
drawn by weight (`MixtureSamples`, a stage's `mixture`, realised counts in `counts`);
supervised batches can be packed (several conversations per row, see `packing`).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from components.data.decoded import cached_samples
from components.data.duplicates import quarantined_keys
from components.data.sample import Sample, single_turns, typed_turns
from components.data.shards import shard_paths
from components.data.synthetic import TEXT_ONLY_SOURCES
from components.model.chat import ChatEncoder, Encoded, collate
from components.training.encode_memo import EncodeMemo
from components.training.packing import RowPacker, collate_packed

SHUFFLE_BUFFER = 1000  # decoded samples held for shuffling, shared out among a mixture's sources


class SampleStream:
    """Endless shuffled samples: shard order reshuffled per epoch plus a shuffle buffer; the
    keys in `skip` (quarantined samples) are left out."""

    def __init__(self, paths: list[Path], seed: int, buffer: int = 1000,
                 skip: Collection[str] = frozenset()):
        self.paths, self.buffer, self.skip = list(paths), buffer, frozenset(skip)
        self.rng = random.Random(seed)
        self.epoch = 0

    def __iter__(self) -> Iterator[Sample]:
        while True:
            order = self.paths[:]
            self.rng.shuffle(order)
            pool: list[Sample] = []
            kept = 0
            for sample in cached_samples(order):  # decoded once per process (decoded.py)
                if sample.key in self.skip:
                    continue
                kept += 1
                pool.append(sample)
                if len(pool) >= self.buffer:
                    yield pool.pop(self.rng.randrange(len(pool)))
            if not kept:
                raise ValueError(f"no trainable sample in {[str(p) for p in self.paths]}: every "
                                 "one is quarantined (data.contamination) or the shards are empty")
            self.rng.shuffle(pool)
            yield from pool
            self.epoch += 1


class MixedSamples:
    """Two endless streams interleaved at random: a sample is text-only with probability `text_ratio`."""

    def __init__(self, text: Iterable[Sample], image: Iterable[Sample], text_ratio: float, seed: int):
        if not 0.0 <= text_ratio <= 1.0:
            raise ValueError(f"text_ratio must be in [0, 1], got {text_ratio}")
        self.text, self.image, self.text_ratio = text, image, text_ratio
        self.rng = random.Random(seed)

    def __iter__(self) -> Iterator[Sample]:
        text, image = iter(self.text), iter(self.image)
        while True:
            yield next(text) if self.rng.random() < self.text_ratio else next(image)


class MixtureSamples:
    """Endless samples, each drawn from source s with probability weight[s] / sum(weights).

    The draws are a pure function of `seed` and the weights; `counts` holds the realised
    number of samples drawn per source so far.
    """

    def __init__(self, streams: Mapping[str, Iterable[Sample]], weights: Mapping[str, float], seed: int):
        if set(streams) != set(weights):
            raise ValueError(f"mixture weights {sorted(weights)} != streams {sorted(streams)}")
        if not weights or any(not w > 0 for w in weights.values()):
            raise ValueError(f"mixture weights must be > 0, got {dict(weights)}")
        self.names = list(weights)
        self.streams = dict(streams)
        self.cumulative = list(itertools.accumulate(float(weights[n]) for n in self.names))
        self.rng = random.Random(seed)
        self.counts = {n: 0 for n in self.names}

    def draw(self) -> str:
        """The source of the next sample."""
        x = self.rng.random() * self.cumulative[-1]
        return self.names[min(bisect.bisect_right(self.cumulative, x), len(self.names) - 1)]

    def __iter__(self) -> Iterator[Sample]:
        its = {n: iter(s) for n, s in self.streams.items()}
        while True:
            name = self.draw()
            self.counts[name] += 1
            yield next(its[name])


def mixture_stream(shards_dir: Path, mixture: Mapping[str, float], seed: int) -> MixtureSamples:
    """The train samples of a stage's `mixture` (source -> weight), one shuffled stream per source."""
    buffer = max(64, SHUFFLE_BUFFER // len(mixture))
    skip = quarantined_keys(shards_dir)
    streams = {s: SampleStream(shard_paths(shards_dir, "train", [s]), seed=seed + 1 + i, buffer=buffer,
                               skip=skip)
               for i, s in enumerate(mixture)}
    return MixtureSamples(streams, mixture, seed)


def sample_stream(shards_dir: Path, sources: list[str], seed: int, text_ratio: float | None = None,
                  mixture: Mapping[str, float] | None = None,
                  ) -> SampleStream | MixedSamples | MixtureSamples:
    """The train samples of `sources`: drawn by `mixture` weight when given, else their natural
    mixture, or text-only sources at `text_ratio`."""
    if mixture:
        if text_ratio is not None:
            raise ValueError("give the text share as the mixture weight of 'text', not text_ratio")
        return mixture_stream(shards_dir, mixture, seed)
    skip = quarantined_keys(shards_dir)
    if text_ratio is None:
        return SampleStream(shard_paths(shards_dir, "train", sources), seed=seed, skip=skip)
    text = [s for s in sources if s in TEXT_ONLY_SOURCES]
    image = [s for s in sources if s not in TEXT_ONLY_SOURCES]
    if not text or not image:
        raise ValueError(f"text_ratio needs a text-only source {list(TEXT_ONLY_SOURCES)} and an image source, "
                         f"got {sources}")
    return MixedSamples(SampleStream(shard_paths(shards_dir, "train", text), seed=seed, skip=skip),
                        SampleStream(shard_paths(shards_dir, "train", image), seed=seed + 1, skip=skip),
                        text_ratio, seed=seed + 2)


def turns_of_types(record: dict, types: Collection[str]) -> list[list[dict]]:
    """The record's single turns (`typed_turns`) whose question type is in `types`; a record
    without a type per turn (`qtypes`, or `qtype` for one turn) has none."""
    return [turn for qtype, turn in typed_turns(record) if qtype in types]


class ChatBatches:
    """Collated supervised batches (assistant-only labels).

    With `packing`, a batch is `batch_size` rows of up to `encoder.max_length` tokens,
    each holding several whole conversations (first fit in arrival order); the batch
    then carries `position_ids` restarting per conversation (see `packing`). Each distinct
    sample is encoded once (`memo`, encode_memo.py).
    """

    rows_per_sample = 1

    def __init__(self, samples: Iterable[Sample], encoder: ChatEncoder, batch_size: int, packing: bool = False,
                 split_turns: bool = False, question_types: Collection[str] | None = None):
        self.samples, self.encoder, self.batch_size, self.packing = samples, encoder, batch_size, packing
        self.split_turns, self.question_types = split_turns, question_types
        self.skipped = 0
        self.pad_id = encoder.tokenizer.pad_token_id
        self.memo = EncodeMemo()

    @property
    def dropped(self) -> int:
        """Alias of `skipped` (samples over `max_length`)."""
        return self.skipped

    def encode(self, sample: Sample) -> list[Encoded] | None:
        """The sample's rows ([] when no turn is selected), or None when one is too long."""
        if self.question_types is not None:
            conversations = turns_of_types(sample.record, self.question_types)
            if not conversations:
                return []
        elif self.split_turns:
            conversations = single_turns(sample.record["messages"])
        else:
            conversations = [sample.record["messages"]]
        encoded = [self.encoder.encode(messages, sample.images) for messages in conversations]
        kept = [e for e in encoded if e is not None]
        return kept or None

    def __iter__(self) -> Iterator[dict]:
        if self.packing:
            yield from self._packed()
            return
        items: list[Encoded] = []
        for sample in self.samples:
            enc = self.memo(sample, self.encode)
            if enc is None:
                self.skipped += 1
                continue
            items.extend(enc)
            full = self.batch_size * self.rows_per_sample
            while len(items) >= full:  # split turns can overshoot: the rest starts the next batch
                yield self.collate(items[:full])
                items = items[full:]

    def _packed(self) -> Iterator[dict]:
        packer, items = RowPacker(self.encoder.max_length, self.batch_size), []
        for sample in self.samples:
            enc = self.memo(sample, self.encode)
            if enc is None:
                self.skipped += 1
                continue
            for it in enc:
                if not packer.add(len(it.input_ids)):
                    yield collate_packed([[items[i] for i in row] for row in packer.groups], self.pad_id)
                    packer, items = RowPacker(self.encoder.max_length, self.batch_size), []
                    packer.add(len(it.input_ids))
                items.append(it)

    def collate(self, items: list[Encoded]) -> dict:
        return collate(items, self.pad_id)


class PreferenceBatches(ChatBatches):
    """Batches of [chosen..., rejected...] rows for preference optimisation.

    A pair whose prompt + image tokens + either answer exceed `max_length` is skipped
    whole and counted (`skipped`): no image token and no answer token is ever cut.
    """

    rows_per_sample = 2

    def __init__(self, samples: Iterable[Sample], encoder: ChatEncoder, batch_size: int):
        super().__init__(samples, encoder, batch_size, packing=False)

    def encode(self, sample: Sample) -> list[Encoded] | None:
        rec = sample.record
        chosen = self.encoder.encode_with_answer(rec["messages"], sample.images, rec["chosen"])
        rejected = self.encoder.encode_with_answer(rec["messages"], sample.images, rec["rejected"])
        if chosen is None or rejected is None:
            return None
        return [chosen, rejected]

    def collate(self, items: list[Encoded]) -> dict:
        return collate(items[0::2] + items[1::2], self.pad_id)
