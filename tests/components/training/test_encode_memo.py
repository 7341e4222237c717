"""Each distinct sample is encoded once per stream: the same batches as encoding every time,
the processor run once per sample, the budget and the record digest respected."""

from __future__ import annotations

import itertools

import pytest
import torch

from components.data.corpus import generate_samples
from components.data.sample import Sample
from components.model.architectures.idefics3 import build_processor
from components.model.chat import ChatEncoder
from components.training.data_stream import ChatBatches, PreferenceBatches
from components.training.encode_memo import ENV, EncodeMemo, budget_bytes


@pytest.fixture
def encoder(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8, scale_factor=2)
    return ChatEncoder(processor, max_length=256)


def _epochs(samples: list[Sample], n: int) -> list[Sample]:
    return [s for _ in range(n) for s in samples]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("split_turns, packing", [(True, False), (False, True)])
def test_memoised_batches_equal_encoding_every_time(encoder, monkeypatch, split_turns, packing):
    samples = list(generate_samples("scenes_vqa", 0, "train", 0, 12, image_size=64))
    stream = _epochs(samples, 3)
    monkeypatch.setenv(ENV, "0")
    plain = ChatBatches(stream, encoder, 4, split_turns=split_turns, packing=packing)
    expected = list(plain)
    assert plain.memo.stats.hits == plain.memo.stats.misses == 0  # off
    monkeypatch.delenv(ENV)
    memo = ChatBatches(stream, encoder, 4, split_turns=split_turns, packing=packing)
    calls = []
    encode = memo.encode
    memo.encode = lambda s: calls.append(s.key) or encode(s)
    _assert_same_batches(list(memo), expected)
    assert sorted(calls) == sorted(s.key for s in samples)  # one encoding per distinct sample
    assert memo.memo.stats.hits == 2 * len(samples)
    assert memo.memo.stats.metrics()["encode_memo_hit_rate"] == pytest.approx(2 / 3)


def test_split_turn_rows_of_one_image_share_one_pixel_tensor(encoder):
    sample = next(s for s in generate_samples("scenes_vqa", 0, "train", 0, 12, image_size=64)
                  if len(s.record["messages"]) >= 6)
    rows = EncodeMemo()(sample, ChatBatches([], encoder, 1, split_turns=True).encode)
    assert len(rows) >= 3 and all(r.pixel_values is rows[0].pixel_values for r in rows)
    assert rows[0].pixel_values.shape[0] == 5  # 2x2 tiles and the global view, stored once


def test_a_rewritten_record_is_encoded_again(encoder):
    sample = next(iter(generate_samples("preference", 0, "train", 0, 1, image_size=32)))
    rewritten = Sample(sample.key, sample.images, {**sample.record, "rejected": "a green star."})
    batches = PreferenceBatches([sample, rewritten, sample], encoder, 1)
    chosen_rejected = [b["input_ids"] for b in batches]
    assert batches.memo.stats.misses == 2 and batches.memo.stats.hits == 1
    assert not torch.equal(chosen_rejected[0], chosen_rejected[1])
    assert torch.equal(chosen_rejected[0], chosen_rejected[2])


def test_past_the_budget_it_stops_adding_and_keeps_serving(encoder):
    samples = list(generate_samples("scenes_vqa", 0, "train", 0, 6, image_size=64))
    encode = ChatBatches([], encoder, 1).encode
    one = EncodeMemo()
    one(samples[0], encode)
    memo = EncodeMemo(max_bytes=int(2.5 * one.stats.bytes))
    for s in itertools.chain(samples, samples):
        memo(s, encode)
    assert len(memo.rows) == 2 and memo.stats.bytes <= memo.max_bytes
    assert memo.stats.hits == 2 and memo.stats.misses == 10


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, "1.5")
    assert budget_bytes() == int(1.5 * 2**20)
    for bad in ("lots", "-1"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            budget_bytes()
