"""Run by tests/components/training/test_distributed.py under the launcher (or alone as the
one-process reference): a tiny Llama trained by `components.training.loop.train` on
fixed token batches; writes what this rank saw and its final weights to --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from components.recipe import TrainSettings
from components.training.loop import train

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
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=SEQ))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[torch.Tensor] = []

    def objective(m, batch):
        seen.append(batch["input_ids"].clone())
        return m(**batch).loss, {}

    result = train(model, batches(args.batch_size),
                   TrainSettings(steps=args.steps, lr=1e-2, warmup_steps=1, log_every=1), objective)
    rank = int(os.environ.get("RANK", "0"))
    torch.save({"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")),
                "seen": seen, "before": before, "after": model.state_dict(),
                "history": result.history, "samples": result.samples},
               Path(args.out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
