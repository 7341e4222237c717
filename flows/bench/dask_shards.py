"""`vlmforge bench dask`: data-preparation throughput on a Dask LocalCluster, 1 worker vs 2.

The corpus is the `data:` section of configs/tiny.yaml (seed, image size, shard size as
the recipe has them), all 10,500 samples in 22 shards: about 20 s on one worker of a
2-core machine, so no scaling down is needed; ``scale`` < 1 multiplies every per-source
count (0.25 gives 2,623 samples in 15 shards, too short for cluster overheads to vanish). Both runs happen side by side in
this process, each on a fresh 127.0.0.1 LocalCluster of single-threaded worker processes
(`components.data.parallel.local_cluster`), writing shards and manifests to a temporary
directory through `generate_corpus_on_dask`.

Timed: shard generation + writing + manifests (`generate_corpus`'s own clock), after the
cluster is up and every worker has imported the generators and the tar writer and scanned
the fonts; cluster start-up is reported separately. ratio = 2-worker records/s divided by
1-worker records/s (2.0 is perfect scaling; shard sizes are uneven, so the last shard
of a run can leave one worker idle).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from flows.environment import PROJECT_ROOT

TINY = PROJECT_ROOT / "configs" / "tiny.yaml"


def _warm_worker() -> None:
    """What a worker loads once: generators and the font scan."""
    import components.data.corpus  # noqa: F401
    from components.data.synthetic.fonts import available_fonts

    available_fonts()


def bench_params(recipe: str | Path = TINY, scale: float = 1.0):
    """The recipe's data params with every per-source count scaled by ``scale``."""
    from components.recipe import load_recipe

    params = load_recipe(recipe).data
    if scale == 1:
        return params
    splits = {split: {source: int(round(n * scale)) for source, n in counts.items()}
              for split, counts in params.splits.items()}
    return params.model_copy(update={"splits": splits})


def _one(params: Any, n_workers: int) -> dict[str, Any]:
    from components.data.corpus import shard_plan
    from components.data.parallel import generate_corpus_on_dask, local_cluster

    start = time.perf_counter()
    with local_cluster(n_workers) as client:
        client.wait_for_workers(n_workers)
        client.run(_warm_worker)
        startup = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="vlmforge-bench-dask-") as out:
            summary = generate_corpus_on_dask(params, out, client=client)
    return {"workers": summary["workers"], "samples": summary["samples"],
            "shards": sum(len(shard_plan(params, s)) for s in params.splits),
            "seconds": summary["seconds"], "records_per_s": summary["records_per_s"],
            "cluster_startup_seconds": round(startup, 2)}


def bench_dask(recipe: str | Path = TINY, scale: float = 1.0) -> dict[str, Any]:
    """Records/s of the scaled tiny corpus on 1 and on 2 Dask workers, and their ratio."""
    params = bench_params(recipe, scale)
    one, two = _one(params, 1), _one(params, 2)
    return {"recipe": str(Path(recipe).name), "scale": scale, "samples": one["samples"],
            "shards": one["shards"], "shard_size": params.shard_size,
            "seconds_1_worker": one["seconds"], "seconds_2_workers": two["seconds"],
            "records_per_s_1": one["records_per_s"], "records_per_s_2": two["records_per_s"],
            "cluster_start_s": [one["cluster_startup_seconds"], two["cluster_startup_seconds"]],
            "ratio": round(two["records_per_s"] / one["records_per_s"], 2)}
