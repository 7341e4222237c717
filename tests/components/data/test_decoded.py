"""Decoded shards in memory: the same samples as a fresh read, each shard decoded once."""

from __future__ import annotations

import os
from itertools import islice

import pytest
from PIL import Image

from components.data import decoded
from components.data.sample import Sample
from components.data.shards import read_samples, write_shard


@pytest.fixture(autouse=True)
def _empty_cache():
    decoded.clear()
    yield
    decoded.clear()


def _shard(path, first: int, n: int = 3):
    samples = [Sample(f"k{i:03d}", [Image.new("RGB", (8, 8), (i, 0, 0))], {"i": i})
               for i in range(first, first + n)]
    write_shard(samples, path)
    return path


def _digest(samples):
    return [(s.key, s.record, [im.tobytes() for im in s.images]) for s in samples]


def test_cached_read_equals_a_fresh_read_and_is_decoded_once(tmp_path):
    paths = [_shard(tmp_path / "a.tar", 0), _shard(tmp_path / "b.tar", 3)]
    first = list(decoded.cached_samples(paths))
    assert _digest(first) == _digest(read_samples(paths))
    assert decoded.cached_bytes() == sum(decoded.sample_bytes(s) for s in first) > 0
    again = list(decoded.cached_samples(paths[::-1]))  # shard order is the caller's
    assert [id(s) for s in again] == [id(s) for s in first[3:] + first[:3]]


def test_a_shard_read_in_part_or_rewritten_is_read_again(tmp_path):
    path = _shard(tmp_path / "a.tar", 0)
    list(islice(decoded.cached_samples([path]), 2))
    assert decoded.cached_bytes() == 0  # not read to its end: not kept
    first = list(decoded.cached_samples([path]))
    _shard(path, 10, n=4)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    rewritten = list(decoded.cached_samples([path]))
    assert [s.key for s in rewritten] == ["k010", "k011", "k012", "k013"]
    assert {id(s) for s in rewritten}.isdisjoint(id(s) for s in first)


def test_the_budget_bounds_what_is_kept(tmp_path, monkeypatch):
    path = _shard(tmp_path / "a.tar", 0)
    monkeypatch.setenv(decoded.ENV, "0")
    assert len(list(decoded.cached_samples([path]))) == 3 and decoded.cached_bytes() == 0
    monkeypatch.setenv(decoded.ENV, str(100 / 2**20))  # 100 bytes: less than one shard
    list(decoded.cached_samples([path]))
    assert decoded.cached_bytes() == 0
    monkeypatch.setenv(decoded.ENV, "many")
    with pytest.raises(ValueError, match=decoded.ENV):
        list(decoded.cached_samples([path]))
