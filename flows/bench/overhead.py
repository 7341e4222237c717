"""`vlmforge bench overhead`: the platform's training loop vs a bare PyTorch loop.

Same tiny VLM (configs/tiny.yaml's backbone dims, built from the recipe's inline configs,
randomly initialised: no pipeline run needed), same 64 px batches, same number of steps,
side by side in one process, repeats interleaved. The bare loop is forward, backward,
AdamW step, zero_grad; the platform loop (`components.training.loop.train`) adds
accelerate, the lr schedule, gradient clipping and per-step metrics. Step time is the
steady state (a 1-step call subtracted from a 1 + `steps` call); what a call spends
before its first step (building the accelerator, the optimiser) is reported apart as
set-up (ratio = platform / bare wall seconds per step; goal <= 1.03; the CPU-time ratio
beside it is the steadier figure on a shared machine).
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

RECIPE = "configs/tiny.yaml"


@dataclass
class TinySetup:
    model: object  # Idefics3ForConditionalGeneration, trainable groups as in tiny_setup's stage
    batches: list[dict]
    image_tokens: int  # per image at this resolution
    tokens_per_sample: float  # mean sequence length (text + image tokens)


def tiny_setup(scale_factor: int, image_px: int = 64, batch_size: int = 16, n_batches: int = 4,
               max_length: int = 512, seed: int = 0, recipe_path: str = RECIPE) -> TinySetup:
    """The tiny recipe's VLM (inline backbone configs) and `n_batches` collated batches of
    synthetic VQA samples at `image_px`, tiled into 32 px tiles."""
    from components.data.corpus import generate_samples
    from components.data.sample import message_text
    from components.data.tokenizer import train_tokenizer
    from components.model.chat import collate
    from components.recipe import load_recipe
    from flows.bench.loader import tiny_model_and_encoder

    recipe = load_recipe(recipe_path)
    n = batch_size * n_batches
    samples = list(generate_samples("scenes_vqa", seed, "train", 0, n, image_size=image_px))
    texts = [f"{m['role']}\n{message_text(m)}" for s in samples for m in s.record["messages"]]
    tokenizer = train_tokenizer(texts, recipe.data.vocab_size, split_digits=recipe.data.split_digits)
    # the trainable groups of the recipe's first stage at this resolution, else of its last
    stage = next((s for s in recipe.stages if s.longest_edge == image_px), recipe.stages[-1])
    stage = stage.model_copy(update={"longest_edge": image_px})
    model, encoder = tiny_model_and_encoder(recipe, stage, tokenizer, scale_factor=scale_factor,
                                            max_length=max_length, seed=seed)
    items = [encoder.encode(s.record["messages"], s.images) for s in samples]
    if any(it is None for it in items):
        raise ValueError(f"a sample exceeds max_length {max_length}")
    batches = [collate(items[i:i + batch_size], tokenizer.pad_token_id) for i in range(0, n, batch_size)]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    per_image = int((batches[0]["input_ids"][0] == image_id).sum()) // len(samples[0].images)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / n
    return TinySetup(model, batches, per_image, tokens)


@contextlib.contextmanager
def measurement_threads() -> Iterator[int]:
    """On CPU, one torch thread unless OMP_NUM_THREADS says otherwise: on a shared machine a
    second OpenMP thread spins while other jobs hold the cores and swamps the step time with
    noise (measured here: 0.4 s vs 1-2.7 s of CPU per step). Yields the thread count."""
    import torch

    before = torch.get_num_threads()
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def bare_loop(model, batches: list[dict], steps: int, lr: float) -> None:
    """The plain PyTorch loop: forward, backward, AdamW step, zero_grad."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def platform_loop(model, batches: list[dict], steps: int, lr: float) -> None:
    """`components.training.loop.train` with the stage defaults (clipping 1.0, log every 10)."""
    from components.recipe import TrainSettings
    from components.training.loop import train

    train(model, batches, TrainSettings(steps=steps, lr=lr, warmup_steps=min(5, steps), log_every=10))


def timed(loop, model, batches: list[dict], steps: int, lr: float) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole `loop` call, set-up included. CPU time (all threads of
    this process) is what other jobs on a shared machine disturb least."""
    wall, cpu = time.perf_counter(), time.process_time()
    loop(model, batches, steps, lr)
    return time.perf_counter() - wall, time.process_time() - cpu


def steady_step(loop, model, initial: dict, batches: list[dict], steps: int, lr: float,
                short: int = 1) -> tuple[float, float, float]:
    """(wall, CPU) seconds per step and wall set-up seconds of `loop`, from a `short` run and a
    `short + steps` run from the same weights: the difference is `steps` steady-state steps,
    whatever either loop spends before its first step."""
    model.load_state_dict(initial)
    wall_a, cpu_a = timed(loop, model, batches, short, lr)
    model.load_state_dict(initial)
    wall_b, cpu_b = timed(loop, model, batches, short + steps, lr)
    wall, cpu = (wall_b - wall_a) / steps, (cpu_b - cpu_a) / steps
    return wall, cpu, wall_a - short * wall


def bench_overhead(steps: int = 8, repeats: int = 3, batch_size: int = 16, image_px: int = 64,
                   seed: int = 0, recipe_path: str = RECIPE) -> dict:
    """Median steady-state seconds per step of both loops over `repeats` interleaved
    measurements (see `steady_step`), after one warm-up call each."""
    import torch

    from components.recipe import load_recipe

    scale = load_recipe(recipe_path).model.scale_factor
    setup = tiny_setup(scale, image_px=image_px, batch_size=batch_size, seed=seed,
                       recipe_path=recipe_path)
    initial = copy.deepcopy(setup.model.state_dict())
    lr = 1e-3
    loops = {"bare": bare_loop, "platform": platform_loop}
    for loop in loops.values():  # warm-up
        setup.model.load_state_dict(initial)
        loop(setup.model, setup.batches, 1, lr)
    runs: dict[str, list[tuple[float, float, float]]] = {"bare": [], "platform": []}
    with measurement_threads() as threads:
        for r in range(repeats):
            for name in (("bare", "platform") if r % 2 else ("platform", "bare")):
                runs[name].append(steady_step(loops[name], setup.model, initial, setup.batches,
                                              steps, lr))

    def median(name: str, i: int) -> float:
        return statistics.median(t[i] for t in runs[name])

    ms = {f"{name}_{what}": round(1000 * median(name, i), 2) for name in loops
          for i, what in enumerate(("step_ms", "cpu_step_ms", "setup_ms"))}
    return {"platform_step_ms": ms["platform_step_ms"], "bare_step_ms": ms["bare_step_ms"],
            "ratio": round(median("platform", 0) / median("bare", 0), 3), "goal": 1.03,
            "platform_cpu_step_ms": ms["platform_cpu_step_ms"],
            "bare_cpu_step_ms": ms["bare_cpu_step_ms"],
            "cpu_time_ratio": round(median("platform", 1) / median("bare", 1), 3),
            "platform_setup_ms": ms["platform_setup_ms"], "bare_setup_ms": ms["bare_setup_ms"],
            "platform_runs_ms": [round(1000 * t[0], 1) for t in runs["platform"]],
            "bare_runs_ms": [round(1000 * t[0], 1) for t in runs["bare"]],
            "steps": steps, "repeats": repeats, "batch_size": batch_size, "image_px": image_px,
            "image_tokens": setup.image_tokens,
            "trainable_params": sum(p.numel() for p in setup.model.parameters() if p.requires_grad),
            "torch_threads": threads, "device": "cpu" if not torch.cuda.is_available()
            else torch.cuda.get_device_name()}
