"""`vlmforge bench stage-step`: a training stage's seconds per step with and without each of
four savings, side by side in one process.

- decoded shards kept in memory (components/data/decoded.py; off: ``VLMFORGE_SAMPLE_CACHE_MB=0``,
  every epoch reads the tars and decodes the PNGs again);
- processed images kept per content (components/model/image_memo.py; off:
  ``VLMFORGE_IMAGE_MEMO_MB=0``, each question about an image processes it again);
- the fused AdamW kernel (off: one update per parameter tensor, torch's CPU default);
- the LM head only where a labelled token is predicted (components/model/logps.py; off: logits
  at every position and transformers' own loss, as before).

`run_stage` trains the recipe's stage (default: its longest, the tiny recipe's bind stage; the
VLM from inline backbone configs, random weights, the same seed each time) for ``steps`` steps on
``images`` generated images per source, once per arm, repeats alternating the order. An arm's
seconds are the loop's own (data, forward, backward, optimiser): ``<arm>_ms_per_step`` (median
over repeats) and ``<arm>_ratio`` = ``baseline`` / arm. Every arm starts with these caches and
the frozen tower's store empty. ``max_loss_diff``: the largest
difference between the baseline's and ``all``'s logged losses (the savings change the rounding,
not the result).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from unittest import mock

from flows.bench.loader import tiny_model_and_encoder
from flows.bench.overhead import RECIPE, measurement_threads

ARMS = {"baseline": (), "cache": ("cache",), "memo": ("memo",), "fused": ("fused",), "head": ("head",),
        "all": ("cache", "memo", "fused", "head")}


def _full_logits_token(model, batch):
    return model(**batch).loss, {}


def _full_logits_sample(model, batch):
    from components.model.chat import IGNORE
    from components.model.logps import labelled_tokens

    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    logps = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    tokens = labelled_tokens(batch["labels"])
    nll = -(logps * mask).sum(-1) / tokens.clamp(min=1)
    return nll[tokens > 0].mean(), {}


@contextlib.contextmanager
def _savings(on: tuple[str, ...]):
    """The code paths of ``on``; the others as they were before."""
    import torch

    from components.data import decoded
    from components.model import image_memo
    from components.training.objectives import SUPERVISED_OBJECTIVES
    from components.training.tower_cache import clear_shared

    adamw = torch.optim.AdamW
    caches = (decoded.clear, image_memo.clear, clear_shared)  # every arm starts cold
    for clear in caches:
        clear()
    with contextlib.ExitStack() as stack:
        if "cache" not in on:
            stack.enter_context(mock.patch.dict(os.environ, {decoded.ENV: "0"}))
        if "memo" not in on:
            stack.enter_context(mock.patch.dict(os.environ, {image_memo.ENV: "0"}))
        if "fused" not in on:
            stack.enter_context(mock.patch.object(
                torch.optim, "AdamW", lambda params, **kw: adamw(params, **{**kw, "fused": False})))
        if "head" not in on:
            stack.enter_context(mock.patch.dict(
                SUPERVISED_OBJECTIVES, {"token": _full_logits_token, "sample": _full_logits_sample}))
        yield
    for clear in caches:
        clear()


def bench_stage_step(steps: int = 150, images: int = 800, repeats: int = 2, stage_name: str | None = None,
                     recipe_path: str = RECIPE) -> dict:
    from components.data.corpus import generate_corpus
    from components.data.tokenizer import corpus_texts, train_tokenizer
    from components.recipe import load_recipe
    from components.training.stage import run_stage

    recipe = load_recipe(recipe_path)
    trained = [s for s in recipe.stages if s.kind != "align" and s.train.steps]
    stage = (next(s for s in trained if s.name == stage_name) if stage_name
             else max(trained, key=lambda s: s.train.steps))
    stage = stage.model_copy(update={"train": stage.train.model_copy(update={"steps": steps, "eval_every": 0})})
    params = recipe.data.model_copy(update={"splits": {"train": {s: images for s in stage.sources}},
                                            "shard_size": images // 4})
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-step-") as tmp, measurement_threads() as threads:
        generate_corpus(params, tmp, workers=1)
        tokenizer = train_tokenizer(corpus_texts(tmp, "train"), recipe.data.vocab_size,
                                    split_digits=recipe.data.split_digits)
        for r in range(repeats):
            for arm in (list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]):
                model, encoder = tiny_model_and_encoder(recipe, stage, tokenizer)
                with _savings(ARMS[arm]):
                    run = run_stage(model, encoder.processor, stage, Path(tmp), seed=recipe.seed,
                                    max_length=recipe.model.max_length)
                seconds[arm].append(run.result.seconds / steps)
                losses[arm] = [h["loss"] for h in run.result.history]
    base = statistics.median(seconds["baseline"])
    out: dict = {"recipe": recipe.name, "stage": stage.name, "steps": steps, "images_per_source": images,
                 "batch_size": stage.train.batch_size, "torch_threads": threads}
    for arm, values in seconds.items():
        out[f"{arm}_ms_per_step"] = round(1e3 * statistics.median(values), 1)
        if arm != "baseline":
            out[f"{arm}_ratio"] = round(base / statistics.median(values), 3)
    out["max_loss_diff"] = max(abs(a - b) for a, b in zip(losses["baseline"], losses["all"], strict=True))
    return out
