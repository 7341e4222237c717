"""`vlmforge bench NAME`: measurements run side by side in one process, with a ratio.

- startup: wall time of `vlmforge --help` vs a bare `python -c pass` (ratio = help / bare).
- bytecode: a pipeline process's imports in a fresh process, every module compiled vs read from
  cached bytecode (ratio = compiled / cached); see flows/bench/runs.py.
- rerun:   `vlmforge run` twice on a fresh home (ratio = unchanged second run / first run).
- generation: batched KV-cache generation vs one prompt at a time (ratio = per-sample / batched).
- serve:   500 requests at concurrency 8 against `vlmforge serve` (ratio = served / in-process
  throughput).
- soak:    1,000 requests at concurrency 8, one in ten hostile, against `vlmforge serve` of a tiny
  VLM: responses by status (none >= 500), good requests answered, latency, the server's peak RSS
  against the bound its caps imply; see flows/bench/soak.py.
- dask:    shard generation of configs/tiny.yaml's data (10,500 samples) on a Dask LocalCluster of
  1 vs 2 workers (ratio = 2-worker / 1-worker records/s); see flows/bench/dask_shards.py.
- loader:  the webdataset loader's samples/s at the recipe's highest-resolution stage vs the model's
  training samples/s (ratio = loader / training, goal >= 5); see flows/bench/loader.py.
- overhead: the platform's training loop vs a bare PyTorch loop, tiny VLM at 64 px (ratio =
  platform / bare seconds per step; goal <= 1.03); see flows/bench/overhead.py.
- parallel: training samples/s of one process on every core vs one one-thread process per core
  (ratio = parallel / single; what `vlmforge ablate --workers` relies on); see
  flows/bench/parallel.py.
- tower-cache: a frozen-tower stage's training samples/s without vs with the vision tower's
  cache of repeated images, at 32 and 64 px (ratio = cached / uncached; the losses must agree);
  see flows/bench/tower_cache.py.
- stage-step: a training stage's seconds per step without vs with each of: decoded shards kept
  in memory, processed images kept per content, the fused AdamW kernel, the LM head only at
  labelled positions (ratio = without all four / with each; the losses must agree); see
  flows/bench/stage_step.py.
- packing: padding share of the recipe's SFT batches without vs with sequence packing (ratio =
  unpacked / packed); see flows/bench/packing.py.
- pixel-shuffle: image tokens and step time with pixel-shuffle factor 1 vs 2 vs 4 (ratio = factor-1
  / factor-4 step time); see flows/bench/pixel_shuffle.py.
- memory:  peak resident memory and seconds per step of the SmolVLM-256M-shaped model's SFT and
  align steps, each memory setting in a fresh process (full, LoRA, gradient checkpointing, bf16;
  copied vs cached reference, LoRA with adapters off; ratios against full fine-tuning and the
  copied reference); see flows/bench/memory.py.
- peer:    the same SFT and DPO through vlmforge's stage and TRL's SFTTrainer / DPOTrainer (same
  model, batches, steps), each in a fresh process: samples/s and peak memory (ratios = vlmforge /
  TRL; goal: speed >= 1, memory <= 1); see flows/bench/peer.py.
- mfu:     tokens/s, model FLOPs utilisation and peak memory of the SmolVLM-256M-shaped model's SFT
  in bf16 with packing and gradient checkpointing (goal on an H100-class GPU: MFU >= 40 %; a
  short smoke run without a GPU); see flows/bench/mfu.py.
"""

from __future__ import annotations

import json

BENCHES = ("rerun", "startup", "bytecode", "generation", "serve", "dask", "overhead", "parallel", "tower-cache",
           "stage-step", "pixel-shuffle", "loader", "packing", "soak", "memory", "peer", "mfu")


def run_bench(name: str, recipe: str, as_json: bool = False,
              model: str = "models:/vlm-tiny@champion", peak_tflops: float | None = None) -> int:
    if name == "generation":
        from flows.bench.generation import bench_generation

        result = bench_generation()
    elif name == "serve":
        from flows.bench.serving import bench_serve

        result = bench_serve(model)
    elif name == "soak":
        from flows.bench.soak import bench_soak

        result = bench_soak()  # a tiny VLM in a throwaway store: --model is for serve
    elif name == "dask":
        from flows.bench.dask_shards import bench_dask

        result = bench_dask(recipe)
    elif name == "overhead":
        from flows.bench.overhead import bench_overhead

        result = bench_overhead(recipe_path=recipe)
    elif name == "parallel":
        from flows.bench.parallel import bench_parallel

        result = bench_parallel(recipe_path=recipe)
    elif name == "tower-cache":
        from flows.bench.tower_cache import bench_tower_cache

        result = bench_tower_cache(recipe_path=recipe)
    elif name == "stage-step":
        from flows.bench.stage_step import bench_stage_step

        result = bench_stage_step(recipe_path=recipe)
    elif name == "packing":
        from flows.bench.packing import bench_packing

        result = bench_packing(recipe_path=recipe)
    elif name == "pixel-shuffle":
        from flows.bench.pixel_shuffle import bench_pixel_shuffle

        result = bench_pixel_shuffle(recipe_path=recipe)
    elif name == "loader":
        from flows.bench.loader import bench_loader

        result = bench_loader(recipe)
    elif name == "memory":
        from flows.bench.memory import bench_memory, table

        result = bench_memory()  # the SmolVLM-256M-shaped model: --recipe is for the others
        if not as_json:
            print(table(result))
            return 0
    elif name == "peer":
        from flows.bench.peer import bench_peer, table

        result = bench_peer()
        if not as_json:
            print(table(result))
            return 0
    elif name == "mfu":
        from flows.bench.mfu import bench_mfu, table

        result = bench_mfu(peak_tflops=peak_tflops)  # the SmolVLM-256M shape: not --recipe
        if not as_json:
            print(table(result))
            return 0
    elif name == "startup":
        from flows.bench.runs import bench_startup

        result = bench_startup()
    elif name == "bytecode":
        from flows.bench.runs import bench_bytecode

        result = bench_bytecode()
    else:
        from flows.bench.runs import bench_rerun

        result = bench_rerun(recipe)
    if as_json:
        print(json.dumps({"bench": name, **result}))
    else:
        width = max(22, *(len(k) + 2 for k in result))
        for k, v in result.items():
            print(f"{k:<{width}}{v}")
    return 0


def cmd_bench(args) -> int:
    return run_bench(args.name, args.recipe, as_json=args.json, model=args.model,
                     peak_tflops=args.peak_tflops)


def add_bench_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="measurements side by side, each with a ratio")
    bench.add_argument("name", choices=list(BENCHES))
    bench.add_argument("--recipe", default="configs/tiny.yaml", help="the recipe measured")
    bench.add_argument("--model", default="models:/vlm-tiny@champion", help="for serve")
    bench.add_argument("--peak-tflops", type=float, default=None,
                       help="for mfu: the device's dense bf16 peak, when not in its table")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
