"""`vlmforge bench NAME`: measurements run side by side in one process, with a ratio.

- startup: wall time of `vlmforge --help` vs a bare `python -c pass` (ratio = help / bare).
- rerun:   `vlmforge run` twice on a fresh home (ratio = unchanged second run / first run).
- generation: batched KV-cache generation vs one prompt at a time (ratio = per-sample / batched).
- serve:   500 requests at concurrency 8 against `mlflow models serve` (ratio = served / in-process
  throughput).
- dask:    shard generation of configs/tiny.yaml's data (10,500 samples) on a Dask LocalCluster of
  1 vs 2 workers (ratio = 2-worker / 1-worker records/s); see flows/bench_dask.py.
- loader:  the webdataset loader's samples/s at the recipe's 64 px stage vs the recipe model's
  training samples/s (ratio = loader / training, goal >= 5); see flows/bench_loader.py.
- overhead: the platform's training loop vs a bare PyTorch loop, tiny VLM at 64 px (ratio =
  platform / bare seconds per step; goal <= 1.03); see flows/bench_overhead.py.
- packing: padding share of the recipe's SFT batches without vs with sequence packing (ratio =
  unpacked / packed); see flows/bench_packing.py.
- pixel-shuffle: image tokens and step time with pixel-shuffle factor 1 vs 2 vs 4 (ratio = factor-1
  / factor-4 step time); see flows/bench_pixel_shuffle.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_startup(repeats: int = 5) -> dict:
    exe = str(Path(sys.executable).parent / "vlmforge")
    bare = [_timed([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    helps = [_timed([exe, "--help"]) for _ in range(repeats)]
    help_s, bare_s = statistics.median(helps), statistics.median(bare)
    return {"help_seconds": round(help_s, 3), "bare_python_seconds": round(bare_s, 3),
            "ratio": round(help_s / bare_s, 2)}


def bench_rerun(recipe: str) -> dict:
    exe = str(Path(sys.executable).parent / "vlmforge")
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-") as home:
        env = dict(os.environ, VLMFORGE_HOME=home)
        env.pop("MLFLOW_TRACKING_URI", None)
        first = _timed([exe, "run", "--recipe", recipe], env)
        second = _timed([exe, "run", "--recipe", recipe], env)
    return {"recipe": recipe, "first_seconds": round(first, 1), "second_seconds": round(second, 1),
            "ratio": round(second / first, 3)}


BENCHES = ("rerun", "startup", "generation", "serve", "dask", "overhead", "pixel-shuffle", "loader",
           "packing")


def run_bench(name: str, recipe: str, as_json: bool = False,
              model: str = "models:/vlm-tiny@champion") -> int:
    if name == "generation":
        from flows.bench_generation import bench_generation

        result = bench_generation()
    elif name == "serve":
        from flows.bench_serve import bench_serve

        result = bench_serve(model)
    elif name == "dask":
        from flows.bench_dask import bench_dask

        result = bench_dask(recipe)
    elif name == "overhead":
        from flows.bench_overhead import bench_overhead

        result = bench_overhead(recipe_path=recipe)
    elif name == "packing":
        from flows.bench_packing import bench_packing

        result = bench_packing(recipe_path=recipe)
    elif name == "pixel-shuffle":
        from flows.bench_pixel_shuffle import bench_pixel_shuffle

        result = bench_pixel_shuffle(recipe_path=recipe)
    elif name == "loader":
        from flows.bench_loader import bench_loader

        result = bench_loader(recipe)
    else:
        result = bench_startup() if name == "startup" else bench_rerun(recipe)
    if as_json:
        print(json.dumps({"bench": name, **result}))
    else:
        for k, v in result.items():
            print(f"{k:<22}{v}")
    return 0
