"""Run under the launcher by tests/components/training/test_resume.py: ddp_probe's tiny Llama for 6
steps with a checkpoint every 2, the checkpoint directory given to rank 0 only (the loop
broadcasts it); writes this rank's final weights, losses and resume step to OUT/rank<r>.pt."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ddp_probe import SEQ, VOCAB, batches  # noqa: E402

from components.recipe import TrainSettings
from components.training.loop import train  # noqa: E402

if __name__ == "__main__":
    from transformers import LlamaConfig, LlamaForCausalLM

    out, ckpt = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=SEQ))
    rank = int(os.environ.get("RANK", "0"))
    result = train(model, batches(4), TrainSettings(steps=6, lr=1e-2, warmup_steps=1, log_every=1,
                                                 checkpoint_every=2),
                   checkpoint_dir=ckpt if rank == 0 else None)
    torch.save({"after": model.state_dict(), "resumed_from": result.resumed_from,
                "losses": [h["loss"] for h in result.history]}, out / f"rank{rank}.pt")
