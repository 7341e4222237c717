"""Shard generation on a Dask cluster: one Dask task per shard job.

Same plan, same per-shard function and same manifests as `corpus.write_splits`, so the
output is byte-identical to the serial run: a shard is a pure function of its
`ShardJob` (source, seed, split, index range, image size) and `write_shard` fixes the
tar's mtime, owner and mode. Only the executor changes.

`local_cluster()` keeps everything on 127.0.0.1 (scheduler, workers, no dashboard).
A remote cluster works the same: `Client("tcp://scheduler:8786")`, with `out_dir` on
storage that every worker and the caller share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.data.corpus import ShardJob, build_shard, generate_corpus, write_splits
from components.data.params import DataParams


@contextlib.contextmanager
def local_cluster(n_workers: int = 2, processes: bool = True) -> Iterator[Any]:
    """A `distributed.Client` on a LocalCluster listening on 127.0.0.1 only."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                      host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def dask_runner(client: Any):
    """A `corpus.JobRunner` with one Dask task per shard; results gathered in job order."""

    def run(jobs: list[ShardJob], out_dir: Path) -> list[list[dict[str, Any]]]:
        futures = client.map(build_shard, jobs, [str(out_dir)] * len(jobs), pure=False,
                             key=[f"shard-{j.split}-{j.filename}" for j in jobs])
        return client.gather(futures)

    return run


def write_splits_on_dask(params: DataParams, splits: list[str], out_dir: str | Path,
                         client: Any) -> dict[str, list[dict[str, Any]]]:
    """`corpus.write_splits` with one Dask task per shard."""
    return write_splits(params, splits, out_dir, run=dask_runner(client))


def generate_corpus_on_dask(params: DataParams, out_dir: str | Path, client: Any | None = None,
                            n_workers: int = 2) -> dict[str, Any]:
    """`corpus.generate_corpus` on Dask: `client`, or a local 127.0.0.1 cluster of `n_workers`."""
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(local_cluster(n_workers))
        summary = generate_corpus(params, out_dir, run=dask_runner(client))
        workers = len(client.nthreads())
    return {**summary, "workers": workers, "executor": "dask"}
