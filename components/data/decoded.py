"""Decoded shards kept in memory: each shard file is read and decoded once per process.

A training stage streams its shards for several epochs, and the stages of a pipeline (and the
evaluation of every stage's version) read the same ones: reading a tar and decoding its PNGs
cost the tiny recipe's demo about 50 s, repeated for every epoch of every stage.
`cached_samples` yields what `read_samples` yields, in the same order; a shard read to its end
is kept (keyed by path, size and modification time, so a rewritten shard is read again) while
the budget lasts (`VLMFORGE_SAMPLE_CACHE_MB`, default 1024; 0 turns the cache off), and later
reads of it are served from memory. The samples are shared: readers must not modify them
(streams that rewrite a record make a new `Sample`). `clear` drops everything (the pipeline
does at its end: a scheduler's process runs many pipelines).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from components.budget import budget_bytes as env_budget
from components.data.sample import Sample
from components.data.shards import read_samples

DEFAULT_MB = 1024
ENV = "VLMFORGE_SAMPLE_CACHE_MB"

_lock = threading.Lock()
_shards: dict[tuple[str, int, int], list[Sample]] = {}
_bytes = 0


def budget_bytes() -> int:
    """`VLMFORGE_SAMPLE_CACHE_MB` MiB (default 1024)."""
    return env_budget(ENV, DEFAULT_MB)


def sample_bytes(sample: Sample) -> int:
    """Memory a decoded sample holds, about: its pixels plus its record as text."""
    pixels = sum(im.width * im.height * len(im.getbands()) for im in sample.images)
    return pixels + len(str(sample.record))


def _key(path: str | Path) -> tuple[str, int, int]:
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def cached_samples(shard_paths: Iterable[str | Path]) -> Iterator[Sample]:
    """The samples of ``shard_paths`` in file order, as `read_samples` gives them; each shard
    from memory when an earlier read kept it."""
    global _bytes
    budget = budget_bytes()
    for path in shard_paths:
        if not budget:
            yield from read_samples([path])
            continue
        key = _key(path)
        with _lock:
            kept = _shards.get(key)
        if kept is not None:
            yield from kept
            continue
        samples = []
        for sample in read_samples([path]):
            samples.append(sample)
            yield sample
        size = sum(sample_bytes(s) for s in samples)  # reached only when the shard was read through
        with _lock:
            if key not in _shards and _bytes + size <= budget:
                _shards[key] = samples
                _bytes += size


def cached_bytes() -> int:
    """The bytes the cache holds now."""
    return _bytes


def clear() -> None:
    """Drop every kept shard."""
    global _bytes
    with _lock:
        _shards.clear()
        _bytes = 0
