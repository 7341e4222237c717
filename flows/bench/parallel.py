"""`vlmforge bench parallel`: training throughput of one process on every core vs one
process per core, one thread each (what `vlmforge ablate --workers` does with seeds).

The recipe's tiny VLM (flows/bench/overhead.py's `tiny_setup`: inline backbone configs,
random weights, 64 px synthetic VQA batches) trains `steps` bare steps in fresh processes:
first one process with as many torch threads as cores, then as many one-thread processes as
cores, started together (a barrier) and timed over the same steps. Repeats alternate the two
layouts. Ratio = the parallel processes' samples/s together / the single process's samples/s
(median over repeats); above 1 means splitting the cores between runs trains faster.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time

from flows.bench.overhead import RECIPE, bare_loop, tiny_setup


def _worker(threads: int, steps: int, batch_size: int, recipe_path: str, barrier, results) -> None:
    import torch

    torch.set_num_threads(threads)
    from components.recipe import load_recipe

    setup = tiny_setup(load_recipe(recipe_path).model.scale_factor, batch_size=batch_size,
                       recipe_path=recipe_path)
    bare_loop(setup.model, setup.batches, 2, 1e-3)  # warm-up
    barrier.wait()
    start = time.perf_counter()
    bare_loop(setup.model, setup.batches, steps, 1e-3)
    results.put(steps * batch_size / (time.perf_counter() - start))


def _samples_per_s(processes: int, threads: int, steps: int, batch_size: int, recipe_path: str
                   ) -> float:
    """All ``processes`` together, each on ``threads`` torch threads: samples per second."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(threads, steps, batch_size, recipe_path, barrier,
                                                results)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a bench process exited with {p.exitcode}")
    return sum(rates)


def bench_parallel(steps: int = 20, repeats: int = 2, batch_size: int = 16,
                   recipe_path: str = RECIPE) -> dict:
    cores = os.cpu_count() or 1
    single, split = [], []
    for _ in range(repeats):
        single.append(_samples_per_s(1, cores, steps, batch_size, recipe_path))
        split.append(_samples_per_s(cores, 1, steps, batch_size, recipe_path))
    one, many = statistics.median(single), statistics.median(split)
    # samples/s of one process on `cores` threads, and of `cores` one-thread processes together
    return {"cores": cores, "steps": steps, "batch_size": batch_size,
            "samples_s_single": round(one, 1), "samples_s_parallel": round(many, 1),
            "ratio": round(many / one, 2)}
