"""One training loop for every objective, on accelerate.

The loop owns optimisation (AdamW, warmup + cosine, clipping, accumulation) and
per-step metrics; an objective maps (model, batch) to (loss, metrics).

Under `accelerate launch` with N processes (DDP), rank r takes batches r, r+N, r+2N...
of the (identically ordered) batch stream, so every rank sees different data and one
optimiser step covers N x batch_size x grad_accum samples; gradients are averaged by
DDP. Logged metrics are reduced over ranks (loss: mean; samples, tokens: sum) and
`on_log` is called on the main process only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch import nn

from components.progress import progress

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]
LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class LoopConfig:
    steps: int
    lr: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    log_every: int = 10
    seed: int = 0


@dataclass
class LoopResult:
    steps: int
    samples: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def mean_loss(self, first: bool) -> float:
        """Mean loss over the first or last fifth of the logged steps."""
        losses = [h["loss"] for h in self.history]
        k = max(1, len(losses) // 5)
        part = losses[:k] if first else losses[-k:]
        return sum(part) / len(part)


def lm_objective(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss on the labelled (assistant) tokens."""
    out = model(**batch)
    return out.loss, {}


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    model: nn.Module,
    batches: Iterable[dict],
    cfg: LoopConfig,
    objective: Objective = lm_objective,
    on_log: LogFn | None = None,
) -> LoopResult:
    """Run `cfg.steps` optimiser steps over `batches` (cycled if shorter)."""
    set_seed(cfg.seed)
    accel = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
        gradient_accumulation_steps=cfg.grad_accum,
        # a text-only batch leaves the connector (and vision tower) without gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps)
    )
    model, optimizer = accel.prepare(model, optimizer)
    # FSDP2 / DeepSpeed replace parameters on prepare: clip the prepared model's own
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    result = LoopResult(steps=0, samples=0, seconds=0.0)
    window = {"loss": 0.0, "samples": 0, "tokens": 0, "micro": 0}
    extra: dict[str, float] = {}
    t_start = t_window = time.perf_counter()
    stream = _shard(_cycle(batches), accel.process_index, accel.num_processes)
    bar = progress(total=cfg.steps, desc="train", unit="step", enabled=accel.is_main_process)
    while result.steps < cfg.steps:
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(accel.device) for k, v in next(stream).items()}
            with accel.accumulate(model):
                loss, metrics = objective(model, batch)
                accel.backward(loss)
                if accel.sync_gradients:
                    grad_norm = accel.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window["loss"] += loss.item()
            window["micro"] += 1
            window["samples"] += batch["input_ids"].shape[0]
            result.samples += batch["input_ids"].shape[0]
            window["tokens"] += int(batch["attention_mask"].sum())
            for k, v in metrics.items():
                extra[k] = extra.get(k, 0.0) + v
        scheduler.step()
        result.steps += 1
        bar.set_postfix(loss=f"{window['loss'] / max(window['micro'], 1):.4f}", refresh=False)
        bar.update()
        if result.steps % cfg.log_every == 0 or result.steps == cfg.steps:
            dt = time.perf_counter() - t_window
            window, extra = _reduce_window(accel, window, extra)
            row = {
                "loss": window["loss"] / window["micro"],
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float("nan") if grad_norm is None else float(grad_norm),
                "samples_per_s": window["samples"] / dt,
                "tokens_per_s": window["tokens"] / dt,
                **{k: v / window["micro"] for k, v in extra.items()},
            }
            result.history.append(row)
            if on_log and accel.is_main_process:
                on_log(result.steps, row)
            window = {"loss": 0.0, "samples": 0, "tokens": 0, "micro": 0}
            extra = {}
            t_window = time.perf_counter()
    bar.close()
    result.seconds = time.perf_counter() - t_start
    if accel.num_processes > 1:
        total = torch.tensor([result.samples], dtype=torch.float64, device=accel.device)
        result.samples = int(accel.reduce(total, reduction="sum").item())
    model.eval()
    return result


def _shard(stream: Iterator[dict], rank: int, world: int) -> Iterator[dict]:
    """Every `world`-th item of `stream`, starting at `rank`."""
    for i, item in enumerate(stream):
        if i % world == rank:
            yield item


def _reduce_window(accel: Accelerator, window: dict, extra: dict[str, float]
                   ) -> tuple[dict, dict[str, float]]:
    """Sum the window's counters over ranks (a no-op on one process)."""
    if accel.num_processes == 1:
        return window, extra
    keys, extra_keys = sorted(window), sorted(extra)
    values = torch.tensor([float(window[k]) for k in keys] + [extra[k] for k in extra_keys],
                          dtype=torch.float64, device=accel.device)
    values = accel.reduce(values, reduction="sum").tolist()
    return dict(zip(keys, values, strict=True)), dict(zip(extra_keys, values[len(keys):], strict=True))


def _cycle(batches: Iterable[dict]) -> Iterator[dict]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("the batch stream is empty")
