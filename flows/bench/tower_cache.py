"""`vlmforge bench tower-cache`: a frozen-tower stage's training with and without the tower
cache (components/training/tower_cache.py), side by side in one process.

For the recipe's first frozen-tower stage at each resolution it trains at (or at the
`longest_edges` given: 32 and 64 px on a tiled recipe), `run_stage` trains
the recipe's VLM (inline backbone configs, random weights, the same seed each time) for
`steps` steps on `images` generated images per source, once with `VLMFORGE_TOWER_CACHE_MB=0`
and once with the default budget, repeats alternating, one torch thread. The loop's own
seconds give samples/s (`<edge>px_ratio` = cached / uncached, median over repeats);
`max_loss_diff` is the largest difference between the two runs' logged losses (the cache
changes what is computed, not the result).
The hit rate decides the gain: a stage sees each image about steps x batch / images times
(split turns add one row per question), so `images` is set to a ratio like the demo's.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from unittest import mock

from flows.bench.loader import tiny_model_and_encoder
from flows.bench.overhead import RECIPE, measurement_threads


def _trains_on_a_frozen_tower(stage) -> bool:
    return bool(stage.train.steps) and stage.kind != "align" and stage.unfreeze.get("vision") == "frozen"


def frozen_tower_edges(recipe) -> tuple[int, ...]:
    """The resolutions at which the recipe trains with its vision tower frozen."""
    return tuple(sorted({s.longest_edge for s in recipe.stages if _trains_on_a_frozen_tower(s)}))


def _frozen_stage(recipe, longest_edge: int):
    stage = next((s for s in recipe.stages if s.longest_edge == longest_edge and _trains_on_a_frozen_tower(s)),
                 None)
    if stage is None:
        raise ValueError(f"recipe {recipe.name!r} has no trained frozen-tower stage at {longest_edge} px")
    return stage


def bench_tower_cache(steps: int = 30, images: int = 120, repeats: int = 2,
                      longest_edges: tuple[int, ...] | None = None, recipe_path: str = RECIPE) -> dict:
    from components.data.corpus import generate_corpus
    from components.data.tokenizer import corpus_texts, train_tokenizer
    from components.recipe import load_recipe
    from components.training.stage import run_stage
    from components.training.tower_cache import DEFAULT_MB, ENV

    recipe = load_recipe(recipe_path)
    stages = [_frozen_stage(recipe, edge) for edge in longest_edges or frozen_tower_edges(recipe)]
    stages = [s.model_copy(update={"train": s.train.model_copy(update={"steps": steps, "eval_every": 0})})
              for s in stages]
    sources = sorted({src for s in stages for src in s.sources})
    params = recipe.data.model_copy(update={"splits": {"train": {s: images for s in sources}},
                                            "shard_size": images})
    out: dict = {"recipe": recipe.name, "steps": steps, "images_per_source": images}
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-tower-") as tmp, measurement_threads() as threads:
        generate_corpus(params, tmp, workers=1)
        tokenizer = train_tokenizer(corpus_texts(tmp, "train"), recipe.data.vocab_size,
                                    split_digits=recipe.data.split_digits)
        for stage in stages:
            rates: dict[str, list[float]] = {"uncached": [], "cached": []}
            losses: dict[str, list[float]] = {}
            hit_rate = 0.0
            for r in range(repeats):
                for arm in (("uncached", "cached") if r % 2 == 0 else ("cached", "uncached")):
                    model, encoder = tiny_model_and_encoder(recipe, stage, tokenizer)
                    budget = "0" if arm == "uncached" else str(DEFAULT_MB)
                    with mock.patch.dict(os.environ, {ENV: budget}):
                        run = run_stage(model, encoder.processor, stage, Path(tmp), seed=recipe.seed,
                                        max_length=recipe.model.max_length)
                    rates[arm].append(run.result.samples / run.result.seconds)
                    losses[arm] = [h["loss"] for h in run.result.history]
                    if run.tower_cache:
                        hit_rate = run.tower_cache.metrics()["tower_cache_hit_rate"]
            uncached, cached = statistics.median(rates["uncached"]), statistics.median(rates["cached"])
            row = {"stage": stage.name, "batch_size": stage.train.batch_size,
                   "samples_s_uncached": round(uncached, 1), "samples_s_cached": round(cached, 1),
                   "ratio": round(cached / uncached, 2), "hit_rate": round(hit_rate, 3),
                   "max_loss_diff": max(abs(a - b) for a, b in zip(losses["cached"], losses["uncached"],
                                                                    strict=True))}
            out.update({f"{stage.longest_edge}px_{k}": v for k, v in row.items()})
    out["torch_threads"] = threads
    return out
