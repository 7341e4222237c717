"""A small real training stage for the resume tests: tiny Idefics3, real shards, run_stage
with checkpoints. `python tests/components/training/resume_worker.py SHARDS TOKENIZER CKPT
[WEIGHTS]` prints `START` when the model is built and training begins, a JSON line per
logged step, then `RESULT <json>`; with WEIGHTS it saves the final state dict there
(torch.save of plain tensors). VLMFORGE_TEST_STEP_SLEEP slows each logged step (so a test
can kill the process between checkpoints); the loop's log (resume, fallback warnings) goes
to stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

STEPS, CHECKPOINT_EVERY, LOG_EVERY = 12, 3, 2
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2)


def run(shards: Path, tokenizer_dir: Path, checkpoint_dir: Path | None, on_log=None,
        weights: Path | None = None) -> dict:
    """Train the stage (resuming from `checkpoint_dir` if it holds a checkpoint); with
    `weights`, save the final state dict there."""
    import torch
    from transformers import AutoTokenizer

    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.backbones import load_text_backbone, load_vision_backbone
    from components.recipe import parse_stage
    from components.training.stage import run_stage

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    vision, lm = load_vision_backbone(VISION), load_text_backbone(TEXT, vocab_size=len(tokenizer))
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    stage = parse_stage(dict(
        name="s", kind="pretrain", longest_edge=32, sources=["scenes_vqa"],
        unfreeze={"vision": "frozen", "connector": "full", "text": "full"},
        train={"steps": STEPS, "batch_size": 2, "log_every": LOG_EVERY, "lr": 3e-3,
               "warmup_steps": 2, "schedule": "wsd", "checkpoint_every": CHECKPOINT_EVERY}))
    sleep = float(os.environ.get("VLMFORGE_TEST_STEP_SLEEP", "0"))

    def log(step, row):
        print(json.dumps({"step": step, "loss": row["loss"]}), flush=True)
        if on_log:
            on_log(step, row)
        time.sleep(sleep)

    print("START", flush=True)
    run = run_stage(model, processor, stage, shards, seed=0, max_length=256, on_log=log,
                    checkpoint_dir=checkpoint_dir)
    if weights is not None:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, weights)
    return {"resumed_from": run.result.resumed_from, "steps": run.result.steps,
            "samples": run.result.samples, "losses": [h["loss"] for h in run.result.history],
            "final_loss": run.result.history[-1]["loss"]}


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    logging.getLogger("components.training").setLevel(logging.INFO)
    out = run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
              weights=Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    print("RESULT " + json.dumps(out), flush=True)
