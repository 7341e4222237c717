"""Independent jobs of a flow run side by side in threads, each with its share of the cores.

A tiny model's kernels keep two cores only partly busy: on this project's 2-core CPU, two
jobs of one torch thread each finish in about 0.7x the time of the same jobs one after the
other on two threads (`vlmforge bench` figures in docs/architecture.md). Torch releases the
GIL in its kernels, so threads are enough; each job runs in a copy of the caller's context
(its Prefect flow run, for artifacts and logs), and MLflow's active run is per thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def map_in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int = 2) -> list[R]:
    """``[fn(x) for x in items]``, ``workers`` at a time, torch's intra-op threads split
    evenly between them for the duration (and restored after)."""
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        return [fn(x) for x in items]
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(contextvars.copy_context().run, fn, x) for x in items]
            return [f.result() for f in futures]
    finally:
        torch.set_num_threads(before)
