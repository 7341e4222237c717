"""`vlmforge bench pixel-shuffle`: image tokens and training step time with the Idefics3
connector's pixel-shuffle factor 1 vs 2 vs 4.

The tiny recipe's VLM (same backbone weights for every factor, only the connector differs)
on the same 64 px samples: a 64 px image is 2x2 tiles of 32 px plus the 32 px global view,
8x8 patches each, so a factor f leaves 64 / f^2 tokens per view. Step time is the
platform loop's steady state (see `bench_overhead.steady_step`), after a warm-up step
(ratio = step time at factor 1 / step time at factor 4).
"""

from __future__ import annotations

import statistics

from flows.bench.overhead import (
    RECIPE,
    measurement_threads,
    platform_loop,
    steady_step,
    tiny_setup,
)

FACTORS = (1, 2, 4)


def bench_pixel_shuffle(steps: int = 5, repeats: int = 2, batch_size: int = 8,
                        image_px: int = 64, seed: int = 0, recipe_path: str = RECIPE) -> dict:
    """Per factor f (keys `f<f>_...`): image tokens per image, mean tokens per sample (text +
    image), median steady-state ms per step, connector parameters."""

    rows = {}
    for f in FACTORS:
        setup = tiny_setup(f, image_px=image_px, batch_size=batch_size, n_batches=2, seed=seed,
                           recipe_path=recipe_path)
        initial = {k: v.clone() for k, v in setup.model.state_dict().items()}
        with measurement_threads() as threads:
            platform_loop(setup.model, setup.batches, 1, lr=1e-3)  # warm-up
            times = [steady_step(platform_loop, setup.model, initial, setup.batches, steps,
                                 lr=1e-3)[0] for _ in range(repeats)]
        rows[f] = {"image_tokens": setup.image_tokens,
                   "tokens_per_sample": round(setup.tokens_per_sample, 1),
                   "step_ms": round(1000 * statistics.median(times), 1),
                   "connector_params": sum(p.numel() for p in setup.model.model.connector.parameters())}
    out: dict = {}
    for f, row in rows.items():
        out.update({f"f{f}_{k}": v for k, v in row.items()})
    out["ratio"] = round(rows[1]["step_ms"] / rows[4]["step_ms"], 2)
    out.update({"steps": steps, "repeats": repeats, "batch_size": batch_size, "image_px": image_px,
                "torch_threads": threads})
    return out
