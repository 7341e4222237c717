"""Shard generation fanned out as Prefect tasks on a Dask cluster (prefect-dask).

`generate_corpus_dask_flow(params, out_dir)` submits one `build-shard` task per shard
job to a `DaskTaskRunner`; the Prefect UI shows every shard as a task run. By default
the runner starts a LocalCluster of 2 worker processes on 127.0.0.1 with no dashboard;
`address="tcp://scheduler:8786"` uses a running cluster instead (the shard folder must
be shared storage then). Output is byte-identical to `components.data.corpus`'s serial
and process-pool runs: same plan, same per-shard function, same manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect_dask import DaskTaskRunner

from components.data.corpus import ShardJob, build_shard, generate_corpus, shard_plan
from components.data.params import DataParams

LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                 "host": "127.0.0.1", "dashboard_address": None}


def dask_runner(address: str | None = None, n_workers: int = 2) -> DaskTaskRunner:
    """A runner on `address`, or on a fresh loopback LocalCluster of `n_workers` processes."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={**LOCAL_CLUSTER, "n_workers": n_workers})


@task(name="build-shard", task_run_name="{job.split}/{job.source}-{job.shard:04d}")
def build_shard_task(job: ShardJob, out_dir: str) -> list[dict[str, Any]]:
    return build_shard(job, out_dir)


def _run_as_tasks(jobs: list[ShardJob], out_dir: Path) -> list[list[dict[str, Any]]]:
    """A `corpus.JobRunner`: one `build-shard` task per job on the flow's task runner."""
    futures = [build_shard_task.submit(job, str(out_dir)) for job in jobs]
    return [f.result() for f in futures]


def _generate(params: DataParams, out_dir: str) -> dict[str, Any]:
    summary = generate_corpus(params, out_dir, run=_run_as_tasks)
    shards = sum(len(shard_plan(params, split)) for split in params.splits)
    get_run_logger().info("%d samples in %d shards in %.1fs", summary["samples"], shards,
                          summary["seconds"])
    return {**summary, "shards": shards, "executor": "dask"}


def generate_corpus_dask_flow(params: DataParams, out_dir: str, address: str | None = None,
                              n_workers: int = 2) -> dict[str, Any]:
    """Run the shard fan-out flow on the chosen Dask runner."""
    runner_flow = flow(name="data-shards-dask", task_runner=dask_runner(address, n_workers))(_generate)
    return runner_flow(params, out_dir)
