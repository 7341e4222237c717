"""Run by tests/components/training/test_distributed.py and test_fsdp.py under the launcher
(or alone as the one-process reference): a tiny Llama trained by `components.training.loop.train` on
fixed token batches; writes what this rank saw and its final weights to --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from components.recipe import TrainSettings
from components.training.loop import train
from components.training.replay import REPLAY, WithReplay

SEQ, VOCAB, ROWS = 12, 64, 32


def batches(batch_size: int) -> list[dict]:
    """ROWS fixed sequences (no padding, every token labelled), cut into batches in order."""
    ids = torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": ids[i:i + batch_size], "attention_mask": torch.ones_like(ids[i:i + batch_size]),
             "labels": ids[i:i + batch_size].clone()} for i in range(0, ROWS, batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=0, help="validation loss every N steps")
    parser.add_argument("--save", action="store_true", help="rank 0 also saves the model (safetensors)")
    parser.add_argument("--replay", action="store_true",
                        help="each batch also carries its rows reversed as replayed rows (align's replay)")
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=SEQ))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[torch.Tensor] = []
    held: list[int] = []  # parameter elements this rank holds while training (FSDP: its shards)

    def objective(m, batch):
        seen.append(batch["input_ids"].clone())
        held.append(sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                        for p in m.parameters()))
        return m(**batch).loss, {}

    @torch.no_grad()
    def validation(m) -> dict[str, float]:
        return {"val_loss": float(m(**batches(ROWS)[0]).loss)}

    data = batches(args.batch_size)
    if args.replay:  # a second forward of the prepared model per step, as an align stage's replay
        data = [{**b, **{REPLAY + k: v.flip(1) for k, v in b.items()}} for b in data]
        objective = WithReplay(objective, weight=0.5)
    result = train(model, data,
                   TrainSettings(steps=args.steps, lr=1e-2, warmup_steps=1, log_every=1,
                                 eval_every=args.eval_every), objective, on_eval=validation)
    rank = int(os.environ.get("RANK", "0"))
    if args.save and rank == 0:
        model.save_pretrained(Path(args.out) / "saved")
    torch.save({"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")),
                "seen": seen, "held": held, "before": before, "after": model.state_dict(),
                "history": result.history, "evals": result.evals, "samples": result.samples},
               Path(args.out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
