"""One training loop for every objective, on accelerate.

The loop owns optimisation (AdamW, warmup + cosine or warmup-stable-decay, clipping,
accumulation), per-step metrics (loss, lr, grad norm, samples/s, tokens/s, padding
fraction) and resumable checkpoints; an objective maps (model, batch) to (loss, metrics).

Checkpoints (`checkpoint_every` > 0 and a `checkpoint_dir`): `accelerate save_state` every
N optimiser steps, after the last step, and on SIGTERM (then `TrainingInterrupted`, exit
status 143); see `checkpoints`. On start, the newest checkpoint that passes its manifest
check is restored (an unusable newer one is skipped with a warning), provided it was
written with this run's world size, per-process batch size and accumulation, and the
batch stream is fast-forwarded past the batches already consumed, so a resumed run sees
the same data in the same order and ends where an uninterrupted one does. The stream
must therefore be deterministic from a fresh iteration (the data streams of
`data_stream` are: seeded shuffles). The LR scheduler is not registered with accelerate
(that would pickle it): its counters travel as JSON in the loop state.

Under `accelerate launch` with N processes (DDP), rank r takes batches r, r+N, r+2N...
of the (identically ordered) batch stream, so every rank sees different data and one
optimiser step covers N x batch_size x grad_accum samples; gradients are averaged by
DDP. Logged metrics are reduced over ranks (loss: mean; samples, tokens: sum) and
`on_log` is called on the main process only. Under FSDP (an FSDP accelerate config, CPU
gloo included) the same holds with the weights sharded over the ranks; `train` hands the
model back unsharded, its full weights on every rank (see `fsdp`).
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from torch import nn

from components.progress import progress
from components.recipe import SCHEDULES, TrainSettings
from components.training import fsdp
from components.training.checkpoints import (
    check_rng_restored,
    check_run_settings,
    newest_verified,
    read_loop_state,
    restore_scheduler,
    save_checkpoint,
    scheduler_state,
    tidy,
)
from components.training.objectives import Objective, lm_objective

LogFn = Callable[[int, dict[str, float]], None]
EvalFn = Callable[[nn.Module], dict[str, float]]
log = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """SIGTERM arrived: a checkpoint was saved and training stopped (exit status 143)."""

    def __init__(self, step: int, path: Path):
        super().__init__(128 + signal.SIGTERM)
        self.step, self.path = step, path

    def __str__(self) -> str:
        return f"training interrupted by SIGTERM at step {self.step}; checkpoint {self.path}"


@dataclass
class LoopResult:
    steps: int
    samples: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # the checkpoint step this run started from (0: a fresh start)
    evals: list[dict[str, float]] = field(default_factory=list)  # on_eval's metrics with "step"

    def mean_loss(self, first: bool) -> float:
        """Mean loss over the first or last fifth of the logged steps."""
        losses = [h["loss"] for h in self.history]
        k = max(1, len(losses) // 5)
        part = losses[:k] if first else losses[-k:]
        return sum(part) / len(part)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_stable_decay(step: int, warmup: int, total: int, decay_fraction: float) -> float:
    """Linear warmup, a constant plateau, then a linear decay to 0 over the last
    `decay_fraction` of the steps (MiniCPM's WSD)."""
    if step < warmup:
        return (step + 1) / warmup
    decay = max(1, round(total * decay_fraction))
    return max(0.0, min(1.0, (total - step) / decay))


SCHEDULE_FUNCTIONS = {  # (step, warmup, total, decay_fraction) -> lr multiplier
    "cosine": lambda step, warmup, total, _: warmup_cosine(step, warmup, total),
    "wsd": warmup_stable_decay,
}
if tuple(SCHEDULE_FUNCTIONS) != SCHEDULES:
    raise RuntimeError(f"schedules {list(SCHEDULE_FUNCTIONS)} != recipe SCHEDULES {list(SCHEDULES)}")


@dataclass
class LRSchedule:
    """The lr multiplier of optimiser step `step` (a picklable LambdaLR lambda)."""

    kind: str
    warmup: int
    total: int
    decay_fraction: float = 0.2

    def __post_init__(self):
        if self.kind not in SCHEDULE_FUNCTIONS:
            raise ValueError(f"schedule must be one of {list(SCHEDULE_FUNCTIONS)}, got {self.kind!r}")

    def __call__(self, step: int) -> float:
        return SCHEDULE_FUNCTIONS[self.kind](step, self.warmup, self.total, self.decay_fraction)


def train(
    model: nn.Module,
    batches: Iterable[dict],
    cfg: TrainSettings,
    objective: Objective = lm_objective,
    on_log: LogFn | None = None,
    checkpoint_dir: Path | str | None = None,
    on_eval: EvalFn | None = None,
    *,
    seed: int = 0,
) -> LoopResult:
    """Run `cfg.steps` optimiser steps over `batches` (cycled if shorter), resuming from the
    newest checkpoint in `checkpoint_dir` if there is one. Every `cfg.eval_every` steps and
    after the last, the main process passes the model to `on_eval`; its metrics (validation
    loss, say) go to `on_log` and `result.evals`."""
    set_seed(seed)
    accel = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
        gradient_accumulation_steps=cfg.grad_accum,
        # a text-only batch leaves the connector (and vision tower) without gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    fsdp.enable_on_cpu(accel)
    plain = model  # under FSDP a copy is sharded and `plain` gets the full weights back
    if fsdp.is_fsdp(accel):
        model = fsdp.shard_copy(plain)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    # the fused kernel updates every tensor in one pass (per tensor, a small model's CPU step
    # spends ~8 % in the optimiser); FSDP's sharded parameters keep the default
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=not fsdp.is_fsdp(accel))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(cfg.schedule, cfg.warmup_steps, cfg.steps, cfg.decay_fraction))
    model, optimizer = accel.prepare(model, optimizer)  # the scheduler is saved as JSON, below
    if fsdp.is_fsdp(accel):
        fsdp.release(plain)
        model.set_reduce_scatter_unused_params(True)  # as find_unused_parameters above
    # FSDP2 / DeepSpeed replace parameters on prepare: clip the prepared model's own
    params = [p for p in model.parameters() if p.requires_grad]

    ckpt_dir = _checkpoint_dir(accel, cfg, checkpoint_dir)
    result = LoopResult(steps=0, samples=0, seconds=0.0)
    window = _Window.empty(accel.device)
    raw = cycle(batches)
    if (path := _resume_from(accel, ckpt_dir)) is not None:
        state = read_loop_state(path)
        check_run_settings(path, state.get("run"), _run_settings(accel, cfg))
        # same data position: skip what the interrupted run consumed, then restore RNGs
        if state["steps"] < cfg.steps:
            _consume(raw, state["steps"] * cfg.grad_accum * accel.num_processes)
        accel.load_state(str(path), load_kwargs={"weights_only": True})
        check_rng_restored(path, accel.process_index)
        restore_scheduler(scheduler, state["scheduler"])
        result.steps = result.resumed_from = state["steps"]
        result.samples, result.history = state["samples"], state["history"]
        result.evals = state.get("evals", [])
        window = _Window.from_state(state["window"], accel.device)
        log.info("resumed from checkpoint %s at step %d of %d", path, result.steps, cfg.steps)
    model.train()
    stream = _shard(raw, accel.process_index, accel.num_processes)
    stop = _SigtermFlag(enabled=ckpt_dir is not None)
    grad_norm = None
    t_start = time.perf_counter()
    window.t0 = t_start
    bar = progress(total=cfg.steps, initial=result.steps, desc="train", unit="step",
                   enabled=accel.is_main_process)
    try:
        while result.steps < cfg.steps:
            for _ in range(cfg.grad_accum):
                batch = next(stream)
                mask = batch["attention_mask"]  # counted on the host: no device sync
                window.add_batch(int(batch["input_ids"].shape[0]), int(mask.sum()), mask.numel())
                result.samples += int(batch["input_ids"].shape[0])
                batch = {k: v.to(accel.device, non_blocking=True) for k, v in batch.items()}
                with accel.accumulate(model):
                    loss, metrics = objective(model, batch)
                    accel.backward(loss)
                    if accel.sync_gradients:
                        grad_norm = accel.clip_grad_norm_(params, cfg.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.add_loss(loss, metrics)
            scheduler.step()
            result.steps += 1
            if not bar.disable:
                bar.set_postfix(loss=f"{window.mean_loss():.4f}", refresh=False)
                bar.update()
            if result.steps % cfg.log_every == 0 or result.steps == cfg.steps:
                row = window.row(accel, scheduler.get_last_lr()[0], grad_norm)
                result.history.append(row)
                if on_log and accel.is_main_process:
                    on_log(result.steps, row)
                window = _Window.empty(accel.device)
            if on_eval and cfg.eval_every and (
                    result.steps % cfg.eval_every == 0 or result.steps == cfg.steps):
                t_eval = time.perf_counter()
                evaluable = _unwrapped(accel, model, plain)  # every rank: FSDP gathers
                if accel.is_main_process:
                    evaluated = on_eval(evaluable)
                    result.evals.append({"step": result.steps, **evaluated})
                    if on_log:
                        on_log(result.steps, evaluated)
                if fsdp.is_fsdp(accel):
                    fsdp.release(plain)
                window.t0 += time.perf_counter() - t_eval  # eval time is not training throughput
            interrupted = stop.agreed(accel)
            if ckpt_dir is not None and (interrupted or result.steps == cfg.steps
                                         or result.steps % cfg.checkpoint_every == 0):
                t_save = time.perf_counter()
                path = save_checkpoint(accel, ckpt_dir, result.steps, {
                    "steps": result.steps, "samples": result.samples, "history": result.history,
                    "evals": result.evals, "window": window.state(),
                    "scheduler": scheduler_state(scheduler), "run": _run_settings(accel, cfg)},
                    cfg.keep_checkpoints)
                window.t0 += time.perf_counter() - t_save  # nor is checkpoint time
                if interrupted:
                    stop.handled = True
                    raise TrainingInterrupted(result.steps, path)
    finally:
        stop.restore()
        bar.close()
    result.seconds = time.perf_counter() - t_start
    if accel.num_processes > 1:
        total = torch.tensor([result.samples], dtype=torch.float64, device=accel.device)
        result.samples = int(accel.reduce(total, reduction="sum").item())
    _unwrapped(accel, model, plain).eval()
    return result


def _unwrapped(accel: Accelerator, model: nn.Module, plain: nn.Module) -> nn.Module:
    """The trained model as a plain module: `plain` filled with the full weights under FSDP
    (a collective: every rank calls it), the unwrapped prepared model otherwise."""
    if fsdp.is_fsdp(accel):
        return fsdp.gather_into(model, plain, accel.device)
    return accel.unwrap_model(model)


class _Window:
    """Counters of the steps since the last logged row. The loss stays a device tensor until
    the row is logged, so a step costs no host sync."""

    def __init__(self, loss: torch.Tensor, micro: int, samples: int, tokens: int, positions: int,
                 extra: dict[str, float], seconds: float):
        self.loss, self.micro, self.samples, self.tokens, self.positions = (
            loss, micro, samples, tokens, positions)
        self.extra, self.seconds = extra, seconds  # seconds: time already spent before a resume
        self.t0 = time.perf_counter()

    @classmethod
    def empty(cls, device) -> _Window:
        return cls(torch.zeros((), device=device), 0, 0, 0, 0, {}, 0.0)

    @classmethod
    def from_state(cls, state: dict, device) -> _Window:
        return cls(torch.tensor(state["loss"], dtype=torch.float32, device=device), state["micro"],
                   state["samples"], state["tokens"], state["positions"], state["extra"],
                   state["seconds"])

    def state(self) -> dict:
        return {"loss": float(self.loss), "micro": self.micro, "samples": self.samples,
                "tokens": self.tokens, "positions": self.positions, "extra": self.extra,
                "seconds": self.seconds + time.perf_counter() - self.t0}

    def add_batch(self, samples: int, tokens: int, positions: int) -> None:
        self.samples += samples
        self.tokens += tokens
        self.positions += positions

    def add_loss(self, loss: torch.Tensor, metrics: dict[str, float]) -> None:
        self.loss = self.loss + loss.detach().float()
        self.micro += 1
        for k, v in metrics.items():
            self.extra[k] = self.extra.get(k, 0.0) + float(v)

    def mean_loss(self) -> float:
        return float(self.loss) / max(self.micro, 1)

    def row(self, accel: Accelerator, lr: float, grad_norm) -> dict[str, float]:
        dt = self.seconds + time.perf_counter() - self.t0
        counts = {"loss": float(self.loss), "micro": float(self.micro),
                  "samples": float(self.samples), "tokens": float(self.tokens),
                  "positions": float(self.positions)}
        counts, extra = _reduce_window(accel, counts, dict(self.extra))
        return {
            "loss": counts["loss"] / counts["micro"],
            "lr": lr,
            "grad_norm": float("nan") if grad_norm is None else float(grad_norm),
            "samples_per_s": counts["samples"] / dt,
            "tokens_per_s": counts["tokens"] / dt,
            "padding_fraction": 1.0 - counts["tokens"] / max(counts["positions"], 1.0),
            **{k: v / counts["micro"] for k, v in extra.items()},
        }


class _SigtermFlag:
    """Notes a SIGTERM (main thread only: Python handles signals there) for the loop to act on
    at the next optimiser step; the previous handler comes back afterwards."""

    def __init__(self, enabled: bool):
        self.enabled, self.seen, self.handled, self.previous = enabled, False, False, None
        if enabled and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.seen = True

    def agreed(self, accel: Accelerator) -> bool:
        """Whether any rank saw SIGTERM (every rank must stop at the same step)."""
        if accel.num_processes == 1 or not self.enabled:
            return self.seen
        flag = torch.tensor([float(self.seen)], device=accel.device)
        return bool(accel.reduce(flag, reduction="sum").item() > 0)

    def restore(self) -> None:
        """Put the previous handler back; a SIGTERM the loop did not act on (it came after the
        last step's check) goes to that handler."""
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None
            if self.seen and not self.handled:
                signal.raise_signal(signal.SIGTERM)


def _checkpoint_dir(accel: Accelerator, cfg: TrainSettings, path: Path | str | None) -> Path | None:
    """Rank 0's checkpoint directory, shared with every rank (one machine)."""
    value = [str(path) if path is not None and cfg.checkpoint_every > 0 else None]
    if accel.num_processes > 1:
        broadcast_object_list(value, from_process=0)
    return None if value[0] is None else Path(value[0])


def _resume_from(accel: Accelerator, ckpt_dir: Path | None) -> Path | None:
    """The checkpoint to resume from: rank 0 clears what a killed writer left and picks the
    newest verified checkpoint, and every rank gets its choice."""
    if ckpt_dir is None:
        return None
    path = None
    if accel.is_main_process:
        tidy(ckpt_dir)
        path = newest_verified(ckpt_dir)
    value = [None if path is None else str(path)]
    if accel.num_processes > 1:
        broadcast_object_list(value, from_process=0)
    return None if value[0] is None else Path(value[0])


def _run_settings(accel: Accelerator, cfg: TrainSettings) -> dict[str, int]:
    """What a checkpoint's data position means: batches per step = world x accumulation."""
    return {"world_size": accel.num_processes, "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum}


def _consume(stream: Iterator, n: int) -> None:
    """Advance `stream` by `n` items."""
    next(itertools.islice(stream, n, n), None)


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
    return (dict(zip(keys, values[:len(keys)], strict=True)),
            dict(zip(extra_keys, values[len(keys):], strict=True)))


def cycle(batches: Iterable[dict], empty_error: str = "the batch stream is empty") -> Iterator[dict]:
    """``batches`` over and over (each pass a fresh iteration); ``empty_error`` if a pass
    yields nothing."""
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError(empty_error)
