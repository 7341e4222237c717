"""`vlmforge bench loader`: the webdataset loader's sustained samples/s vs the tiny model's
training consumption in samples/s, both at the recipe's highest-resolution stage (ratio =
loader / training; the goal is >= 5, so data loading never starves training).

- loader: shards on disk -> PNG decode -> processor (resize, tiles, tokens) -> collated batch
  tensors, exactly as a training stage consumes them (`sample_stream` + `ChatBatches`), timed
  over whole epochs after a warm-up batch;
- training: forward + backward + AdamW steps of the recipe's model (built from its inline
  backbone configs, randomly initialised, the stage's unfreezing) on batches already in memory.

No pipeline run is needed: the bench writes its own shards of the stage's sources to a
temporary folder and trains its own tokenizer on them.
"""

from __future__ import annotations

import tempfile
import time
from itertools import islice
from pathlib import Path


def _stage_at(recipe, longest_edge: int | None):
    """The recipe's first pretrain/SFT stage at ``longest_edge``; None: its last pretrain
    stage at the highest pretraining resolution (the heaviest mixture, OCR pages included)."""
    if longest_edge is None:
        pretrain = recipe.stages_of("pretrain")
        top = max(s.longest_edge for s in pretrain)
        return [s for s in pretrain if s.longest_edge == top][-1]
    for stage in recipe.stages:
        if stage.kind != "align" and stage.longest_edge == longest_edge:
            return stage
    raise ValueError(f"recipe {recipe.name!r} has no pretrain/sft stage at {longest_edge} px")


def tiny_model_and_encoder(recipe, stage, tokenizer, *, scale_factor: int | None = None,
                           max_length: int | None = None, seed: int | None = None):
    """The recipe's VLM from its inline backbone configs (randomly initialised, the stage's
    unfreezing) and a chat encoder at the stage's resolution; the benches' shared model."""
    import torch

    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.backbones import load_text_backbone, load_vision_backbone
    from components.model.chat import ChatEncoder
    from components.model.freeze import apply_unfreezing

    if recipe.backbones is None:
        raise ValueError(f"recipe {recipe.name!r} has no inline backbone configs")
    seed = recipe.seed if seed is None else seed
    scale_factor = scale_factor or recipe.model.scale_factor
    torch.manual_seed(seed)
    vision = load_vision_backbone(recipe.backbones.vision.config)
    lm = load_text_backbone(recipe.backbones.text.config, vocab_size=len(tokenizer))
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=scale_factor, seed=seed)
    apply_unfreezing(model, stage.unfreeze)
    vc = model.config.vision_config
    processor = build_processor(tokenizer, tile_size=vc.image_size, longest_edge=stage.longest_edge,
                                patch_size=vc.patch_size, scale_factor=scale_factor)
    return model, ChatEncoder(processor, max_length or recipe.model.max_length)


def loader_rate(shards: Path, stage, encoder, seed: int,
                batches: int) -> tuple[float, float, list[dict]]:
    """Samples/s and CPU ms per sample of the training data path over `batches` batches after
    one warm-up batch; also returns the batches (the training measurement reuses them)."""
    from components.training.data_stream import ChatBatches, sample_stream

    samples = sample_stream(shards, stage.sources, seed, stage.text_ratio, stage.mixture)
    stream = iter(ChatBatches(samples, encoder, stage.train.batch_size, packing=stage.packing,
                              split_turns=stage.split_turns, question_types=stage.question_types))
    next(stream)  # fills the shuffle buffer
    cpu, start = time.process_time(), time.perf_counter()
    out = list(islice(stream, batches))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = len(out) * stage.train.batch_size
    return n / seconds, 1e3 * cpu / n, out


def training_rate(model, stage, batches: list[dict], steps: int) -> tuple[float, float]:
    """Samples/s and CPU ms per sample (all threads) of optimizer steps (forward, backward,
    clip, AdamW) after one warm-up step."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.train.lr)
    model.train()

    def step(batch: dict) -> None:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(steps):
        step(batches[(i + 1) % len(batches)])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = steps * stage.train.batch_size
    return n / seconds, 1e3 * cpu / n


def bench_loader(recipe_path: str = "configs/tiny.yaml", longest_edge: int | None = None,
                 per_source: int = 192, batches: int = 48, steps: int = 4, workers: int = 2) -> dict:
    """Loader vs training samples/s at the recipe's `longest_edge` stage (None: its highest
    resolution; ratio = loader/training)."""
    import torch

    from components.data.corpus import generate_corpus
    from components.data.tokenizer import corpus_texts, train_tokenizer
    from components.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    stage = _stage_at(recipe, longest_edge)
    params = recipe.data.model_copy(update={
        "splits": {"train": {s: per_source for s in stage.sources}},
        "shard_size": max(1, per_source // 2)})
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-loader-") as tmp:
        generate_corpus(params, tmp, workers=workers)
        tokenizer = train_tokenizer(corpus_texts(tmp, "train"), recipe.data.vocab_size,
                                    split_digits=recipe.data.split_digits)
        model, encoder = tiny_model_and_encoder(recipe, stage, tokenizer)
        loader_sps, loader_cpu, ready = loader_rate(Path(tmp), stage, encoder, recipe.seed, batches)
    training_sps, training_cpu = training_rate(model, stage, ready, steps)
    return {"loader_samples_per_s": round(loader_sps, 1),
            "train_samples_per_s": round(training_sps, 1),
            "ratio": round(loader_sps / training_sps, 2),
            # CPU time per sample: less sensitive to other processes on a shared machine
            "loader_cpu_ms_sample": round(loader_cpu, 2),
            "train_cpu_ms_sample": round(training_cpu, 2),
            "cpu_ratio": round(training_cpu / loader_cpu, 2),
            "recipe": recipe.name, "stage": stage.name, "image_size": recipe.data.image_size,
            "longest_edge": stage.longest_edge, "batch_size": stage.train.batch_size,
            "sources": stage.sources, "shard_samples": per_source * len(stage.sources),
            "loader_batches": len(ready), "training_steps": steps,
            "torch_threads": torch.get_num_threads()}
