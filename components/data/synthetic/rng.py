"""Per-sample randomness derived from (seed, split, source, index), never global state."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def sample_rng(seed: int, split: str, source: str, index: int) -> random.Random:
    """A ``random.Random`` fixed by the sample's identity, independent of process and order."""
    digest = hashlib.sha256(f"vlmforge:{seed}:{split}:{source}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def numpy_rng(rng: random.Random) -> np.random.Generator:
    """A numpy generator seeded from ``rng`` (advances ``rng``)."""
    return np.random.default_rng(rng.getrandbits(64))


def sample_key(source: str, split: str, index: int) -> str:
    """The stable ``__key__`` of a sample."""
    return f"{source}-{split}-{index:07d}"
