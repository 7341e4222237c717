"""`vlmforge bench mfu`: tokens per second, model FLOPs utilisation (MFU) and peak memory of
SmolVLM-256M-shaped SFT (flows/bench/smolvlm_shape.py: hub shapes, random weights; every group
fully trained) in bf16 with sequence packing and gradient checkpointing, the stage's own
training path (`supervised_plan`'s packed batches and objective, `activation_checkpointing`,
the loop's `train`).

The batches (a few distinct ones, cycled) are collated, and pinned on a GPU, before the clock
starts: the loader has its own bench (`bench loader`). Tokens are the LM's real tokens (image
tokens included, tail padding not), counted over the steps after ``warmup``.

Model FLOPs of a step (PaLM's count, training = 3 x forward):

    F(N, L, h, T, S) = 6·N·T + 12·L·h·S·T      (N parameters, L layers, h hidden, T tokens, S sequence)
    step = F(vision, images x patches, S = patches)          the tower runs on every patch
         + 6 · N_connector · images x image tokens           pixel shuffle, then one projection
         + F(LM, real tokens, S = packed row length)
         + 6 · N_head · labelled tokens                     the head runs where a label is predicted

N counts the matrices a token multiplies: embedding lookups are left out, a tied LM head is
counted once (as the head), and only at the positions whose next token is labelled: the
stage asks for no other logits (components/model/logps.py). The attention term takes each packed row's full length, as PaLM
does for a causal model, though packing's block-diagonal mask leaves less attention to do.
Gradient checkpointing's recomputed forward is not counted (MFU, not hardware utilisation).
MFU = model FLOPs per second / the device's dense bf16 peak (`PEAK_BF16`, or --peak-tflops;
null on a CPU unless a peak is given). Peak memory: `torch.cuda.max_memory_allocated` on a
GPU, the process's VmHWM on a CPU, from just before the first step.

Without a GPU this is a smoke run: the real shapes, one short row a step, three steps.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_MFU = 0.40  # issue 22: on an H100-class GPU
# dense bf16 peak of the SXM/PCIe variants by `torch.cuda.get_device_name`
PEAK_BF16 = ((r"\bH100 PCIe\b", 756e12), (r"\bH100 (SXM|80GB HBM3)", 989e12), (r"\bH200\b", 989e12),
             (r"\bA100\b", 312e12), (r"\bL4\b", 121e12))


@dataclass(frozen=True)
class Settings:
    steps: int
    warmup: int  # steps before the clock starts (>= 1)
    batch_size: int  # packed rows a step
    max_length: int  # tokens a packed row holds


GPU = Settings(steps=25, warmup=5, batch_size=8, max_length=2048)
CPU = Settings(steps=3, warmup=1, batch_size=1, max_length=256)
DISTINCT_BATCHES = 4
FULL = {"vision": "full", "connector": "full", "text": "full"}


@dataclass(frozen=True)
class Tower:
    params: int  # parameters a token multiplies (see the module's docstring)
    layers: int
    hidden: int


@dataclass(frozen=True)
class Shape:
    vision: Tower
    connector: int  # parameters
    text: Tower  # without the LM head
    head: int  # the LM head's parameters
    patches: int  # the vision tower's sequence per image
    image_tokens: int  # an image's tokens in the LM (after pixel shuffle)
    image_token_id: int


def training_flops(tower: Tower, tokens: int, seq: int) -> float:
    """6·N·T + 12·L·h·S·T: forward and backward of ``tokens`` tokens in sequences of ``seq``."""
    return 6 * tower.params * tokens + 12 * tower.layers * tower.hidden * seq * tokens


def step_flops(shape: Shape, tokens: int, row_length: int, images: int, labelled: int) -> float:
    """Model FLOPs of one training step (the module's docstring has the formula)."""
    return (training_flops(shape.vision, images * shape.patches, shape.patches)
            + 6 * shape.connector * images * shape.image_tokens
            + training_flops(shape.text, tokens, row_length)
            + 6 * shape.head * labelled)


def model_shape(model) -> Shape:
    """The counts `step_flops` needs, from an Idefics3 VLM."""
    from torch import nn

    def dense(module: nn.Module) -> int:
        lookups = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in module.parameters() if id(p) not in lookups)

    inner, config = model.model, model.config
    vision, text = config.vision_config, config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return Shape(vision=Tower(dense(inner.vision_model), vision.num_hidden_layers, vision.hidden_size),
                 connector=dense(inner.connector),
                 text=Tower(dense(inner.text_model), text.num_hidden_layers, text.hidden_size),
                 head=dense(model.lm_head),
                 patches=patches, image_tokens=patches // config.scale_factor ** 2,
                 image_token_id=config.image_token_id)


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak FLOP/s from `PEAK_BF16`; None when it is not listed."""
    return next((peak for pattern, peak in PEAK_BF16 if re.search(pattern, device_name)), None)


def batch_counts(batch: dict, shape: Shape) -> tuple[int, int, int, int]:
    """(real tokens, row length, images, labelled tokens) of a packed batch."""
    from components.model.logps import labelled_tokens

    ids = batch["input_ids"]
    images = int((ids == shape.image_token_id).sum()) // shape.image_tokens
    labelled = int(labelled_tokens(batch["labels"]).sum())
    return int(batch["attention_mask"].sum()), int(ids.shape[1]), images, labelled


def bench_mfu(settings: Settings | None = None, peak_tflops: float | None = None,
              scale: str = "real") -> dict[str, Any]:
    """Train ``settings.steps`` SFT steps and measure them (``scale``: real or test shapes)."""
    import torch

    from components.model.build import build_stage_model
    from components.model.chat import ChatEncoder
    from components.training.activations import activation_checkpointing
    from components.training.loop import train
    from components.training.stage import supervised_plan
    from flows.bench.memory import peak_kb, reset_peak
    from flows.bench.smolvlm_shape import (
        REAL,
        TEST,
        TILE,
        local_recipe,
        write_backbones,
        write_shards,
    )

    cuda = torch.cuda.is_available()
    settings = settings or (GPU if cuda else CPU)
    if settings.warmup < 1 or settings.steps <= settings.warmup:
        raise ValueError(f"need 1 <= warmup < steps, got {settings}")
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops * 1e12 if peak_tflops else peak_flops(device) if cuda else None
    if cuda and peak is None:
        raise ValueError(f"no bf16 peak known for {device!r}: pass --peak-tflops")
    stage_raw = {"name": "sft-mfu", "kind": "sft", "longest_edge": TILE, "sources": ["scenes_vqa"],
                 "unfreeze": FULL, "dtype": "bf16", "packing": True, "gradient_checkpointing": True,
                 "train": {"steps": settings.steps, "batch_size": settings.batch_size, "lr": 1e-5,
                           "warmup_steps": 1, "log_every": 1}}
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-mfu-") as tmp:
        samples = min(8 * settings.batch_size, 64)  # the stream cycles: repeats cost nothing here
        shards = write_shards(Path(tmp) / "shards", {"train": {"scenes_vqa": samples}})
        vision, text = write_backbones(Path(tmp) / "hub", shards, REAL if scale == "real" else TEST)
        recipe = local_recipe(vision, text, [stage_raw])
        stage = recipe.stages[0]
        model, processor, counts = build_stage_model(
            recipe.model, seed=0, parent_dir=None, registered={}, longest_edge=TILE,
            unfreeze=stage.unfreeze, lora_rank=stage.lora_rank, dtype=stage.dtype)
        plan = supervised_plan(model, stage, shards, ChatEncoder(processor, settings.max_length), 0)
        batches = list(itertools.islice(iter(plan.batches), min(settings.steps, DISTINCT_BATCHES)))
    if cuda:
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    shape = model_shape(model)
    times: list[float] = []
    losses: list[float] = []

    def on_log(step: int, row: dict) -> None:  # every step; the row's loss synced the device
        times.append(time.perf_counter())
        losses.append(row["loss"])

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak()
    with activation_checkpointing(model, stage.gradient_checkpointing):
        train(model, batches, stage.train, plan.objective, on_log)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_kb() / 1024

    measured = [batch_counts(batches[i % len(batches)], shape)
                for i in range(settings.warmup, settings.steps)]
    seconds = times[-1] - times[settings.warmup - 1]
    tokens = sum(c[0] for c in measured)
    flops = sum(step_flops(shape, *c) for c in measured)
    mfu = flops / seconds / peak if peak else None
    return {
        "model": "SmolVLM-256M-shaped (SigLIP-B/16-512 + SmolLM2-135M, random weights)"
                 if scale == "real" else "SmolVLM-256M shapes scaled down",
        "device": device, "torch": torch.__version__, "dtype": stage.dtype, "packing": stage.packing,
        "gradient_checkpointing": stage.gradient_checkpointing, "image_px": TILE,
        "steps": settings.steps, "warmup_steps": settings.warmup, "rows_per_step": settings.batch_size,
        "row_tokens": settings.max_length,
        "params_m": {k: round(v / 1e6, 1) for k, v in counts.items()},
        "flops_params": {"vision": shape.vision.params, "connector": shape.connector,
                         "text": shape.text.params, "head": shape.head},
        "tokens_per_step": round(tokens / len(measured)),
        "images_per_step": round(sum(c[2] for c in measured) / len(measured), 1),
        "labelled_per_step": round(sum(c[3] for c in measured) / len(measured)),
        "seconds_per_step": round(seconds / len(measured), 4),
        "tokens_per_s": round(tokens / seconds, 1),
        "model_flops_per_token": round(flops / tokens),
        "model_tflops_per_s": round(flops / seconds / 1e12, 3),
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": round(mfu, 4) if mfu is not None else None,
        "target_mfu": TARGET_MFU,
        "meets_target": mfu >= TARGET_MFU if mfu is not None else None,
        "peak_memory_mb": round(peak_mb),
        "peak_memory": "torch.cuda.max_memory_allocated" if cuda else "VmHWM",
        "last_loss": round(losses[-1], 4),
        "note": None if cuda else "no GPU: a CPU smoke run (short rows, few steps); MFU unmeasured",
    }


def table(result: dict) -> str:
    """A short summary (what `vlmforge bench mfu` prints without --json)."""
    mfu = "n/a" if result["mfu"] is None else f"{result['mfu']:.1%}"
    lines = [f"{result['model']} on {result['device']}: SFT, {result['dtype']}, packing, "
             f"gradient checkpointing; {result['rows_per_step']} rows x {result['row_tokens']} "
             f"tokens, {result['steps'] - result['warmup_steps']} steps timed",
             f"{'tokens/s':<22}{result['tokens_per_s']}",
             f"{'seconds/step':<22}{result['seconds_per_step']}",
             f"{'model FLOPs/token':<22}{result['model_flops_per_token']:.3e}",
             f"{'model TFLOP/s':<22}{result['model_tflops_per_s']}",
             f"{'peak TFLOP/s':<22}{result['peak_tflops']}",
             f"{'MFU':<22}{mfu} (target {result['target_mfu']:.0%}, met: {result['meets_target']})",
             f"{'peak memory MB':<22}{result['peak_memory_mb']} ({result['peak_memory']})"]
    if result["note"]:
        lines.append(result["note"])
    return "\n".join(lines)
