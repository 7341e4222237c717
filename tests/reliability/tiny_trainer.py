"""A tiny model (linear, dropout, linear) trained by the real loop with checkpoints, for the
checkpoint reliability tests: no transformers, so a process starts in about two seconds,
and dropout, so a resume that did not restore the RNG states would show.

In-process: `run(ckpt, ...)` (`stop_at=N`: SIGTERM at step N, as a preempted job gets:
the loop saves and stops). As a script (also under `accelerate launch`, every rank):
`python tests/reliability/tiny_trainer.py CKPT OUT [--steps 6 --every 2 --batch-size 2
--grad-accum 1 --keep 2]` writes OUT/rank<r>.json with the result and final weights."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WIDTH = 4


def batches(batch_size: int, n: int = 8) -> list[dict]:
    """`n` fixed batches (a fresh list iterates them in the same order every time)."""
    import torch

    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 9, (batch_size, WIDTH), generator=g),
             "attention_mask": torch.ones(batch_size, WIDTH, dtype=torch.long)} for _ in range(n)]


def objective(model, batch: dict):
    x = batch["input_ids"].float()
    loss = (model(x).squeeze(-1) - x.mean(-1)).pow(2).mean()
    return loss, {}


def run(ckpt: Path | None, *, steps: int = 6, every: int = 2, batch_size: int = 2,
        grad_accum: int = 1, keep: int = 2, stop_at: int | None = None) -> dict:
    """Train to `steps` (resuming from `ckpt`); the result with the final weights as lists,
    or {"interrupted_at": step} when stopped by `stop_at`."""
    import torch
    from torch import nn

    from components.recipe import TrainSettings
    from components.training.loop import TrainingInterrupted, train

    def on_log(step: int, row: dict) -> None:
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
    cfg = TrainSettings(steps=steps, batch_size=batch_size, lr=1e-2, warmup_steps=1, log_every=1,
                        grad_accum=grad_accum, checkpoint_every=every, keep_checkpoints=keep,
                        schedule="wsd")
    try:
        result = train(model, batches(batch_size), cfg, objective, on_log, checkpoint_dir=ckpt)
    except TrainingInterrupted as stopped:
        return {"interrupted_at": stopped.step}
    return {"resumed_from": result.resumed_from, "steps": result.steps,
            "losses": [h["loss"] for h in result.history], "lrs": [h["lr"] for h in result.history],
            "weights": {k: v.tolist() for k, v in model.state_dict().items()}}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt")
    parser.add_argument("out")
    for name, default in (("steps", 6), ("every", 2), ("batch-size", 2), ("grad-accum", 1),
                          ("keep", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    a = parser.parse_args()
    out = run(Path(a.ckpt), steps=a.steps, every=a.every, batch_size=a.batch_size,
              grad_accum=a.grad_accum, keep=a.keep)
    rank = int(os.environ.get("RANK", "0"))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"rank{rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
