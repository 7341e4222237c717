"""`vlmforge bench peer`: the same SFT and the same DPO through vlmforge's stage (`run_stage`) and
through TRL's trainers (`SFTTrainer`, `DPOTrainer`), side by side.

Same model (the SmolVLM-256M shapes scaled down: flows/bench/smolvlm_shape.py, assembled once
and saved), same data, batch size, sequence length, steps and optimiser settings (AdamW, lr,
warmup, clipping; fp32, no gradient checkpointing: TRL's defaults of bf16 autocast and
checkpointing are turned off to match). TRL trains on vlmforge's own batches (the first
`steps` batches of the stage's seeded stream, handed over by a pass-through collator), so
both see identical tensors; TRL's DPO reference is its own (loaded again from the saved
folder), vlmforge's the default copy. Each run is a fresh process: samples per second over the
steps after the first, and peak resident memory (VmHWM after the model is loaded), with the
ratios vlmforge / TRL (goal: samples/s >= 1, memory <= 1).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flows.bench.memory import peak_kb, reset_peak, run_worker
from flows.bench.smolvlm_shape import TILE

SFT_BATCH, DPO_PAIRS, MAX_LENGTH, LR = 4, 2, 512, 1e-4
RUNS = ("vlmforge_sft", "trl_sft", "vlmforge_dpo", "trl_dpo")


def stage_section(kind: str, steps: int) -> dict[str, Any]:
    """The stage both sides run (``kind``: sft or align)."""
    return {"name": kind, "kind": kind, "longest_edge": TILE,
            "sources": ["scenes_vqa"] if kind == "sft" else ["preference"],
            "unfreeze": {"vision": "frozen", "connector": "full", "text": "full"},
            "train": {"steps": steps, "batch_size": SFT_BATCH if kind == "sft" else DPO_PAIRS,
                      "lr": LR, "warmup_steps": 1, "log_every": 1}}


def stage_model(root: Path, st):
    """The saved VLM and its processor as a later stage loads them, the stage's groups set."""
    from components.model.backbones import ImageStats
    from components.model.build import load_vlm, processor_for
    from components.model.freeze import apply_unfreezing

    model, saved = load_vlm(root / "vlm")
    stats = ImageStats.of(saved.image_processor)
    processor = processor_for(model, saved.tokenizer, TILE, image_mean=stats.mean, image_std=stats.std)
    apply_unfreezing(model, dict(st.unfreeze), lora_rank=st.lora_rank)
    return model, processor


def stage_batches(root: Path, st, processor, steps: int) -> list[dict]:
    """The first ``steps`` batches the stage trains on: its seeded stream, collated as its plan
    collates them (`supervised_plan` / `preference_plan`)."""
    from components.model.chat import ChatEncoder
    from components.training.data_stream import ChatBatches, PreferenceBatches, sample_stream

    encoder = ChatEncoder(processor, MAX_LENGTH)
    stream = sample_stream(root / "shards", st.sources, 0, None, st.mixture)
    maker = ChatBatches if st.kind == "sft" else PreferenceBatches
    return list(itertools.islice(iter(maker(stream, encoder, st.train.batch_size)), steps))


def run_vlmforge(root: Path, kind: str, steps: int) -> dict[str, Any]:
    from unittest import mock

    import components.training.stage as stage_module
    from components.recipe import parse_stage

    st = parse_stage(stage_section(kind, steps))
    model, processor = stage_model(root, st)
    loaded = peak_kb()
    reset_peak()
    times: list[float] = []
    with mock.patch.object(stage_module, "run_preflight", lambda *a, **k: None):  # as in TRL: none
        stage_module.run_stage(model, processor, st, root / "shards", seed=0, max_length=MAX_LENGTH,
                               on_log=lambda step, row: times.append(time.perf_counter()))
    return _result(st, times, loaded)


def run_trl(root: Path, kind: str, steps: int) -> dict[str, Any]:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from components.model.chat import IGNORE
    from components.recipe import parse_stage

    st = parse_stage(stage_section(kind, steps))
    model, processor = stage_model(root, st)
    batches = stage_batches(root, st, processor, steps)
    if kind == "align":  # TRL's layout: the answers' tokens marked, labels built by the trainer
        batches = [{**{k: v for k, v in b.items() if k != "labels"},
                    "completion_mask": (b["labels"] != IGNORE).long()} for b in batches]
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    common = dict(output_dir=str(root / f"trl-{kind}"), max_steps=steps, per_device_train_batch_size=1,
                  learning_rate=LR, warmup_steps=1, lr_scheduler_type="cosine", weight_decay=0.0,
                  max_grad_norm=1.0, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                  gradient_checkpointing=False, save_strategy="no", remove_unused_columns=False,
                  dataloader_num_workers=0, seed=0, max_length=None)
    rows = {"index": list(range(len(batches)))}

    def collate(items: list[dict]) -> dict:
        return batches[items[0]["index"]]

    loaded = peak_kb()
    reset_peak()
    if kind == "sft":
        trainer = trl.SFTTrainer(model=model, args=trl.SFTConfig(
            **common, dataset_kwargs={"skip_prepare_dataset": True}),
            train_dataset=Dataset.from_dict(rows), processing_class=processor.tokenizer,
            data_collator=collate, callbacks=[StepTimes()])
    else:  # a vision dataset: TRL skips its own tokenisation and takes the batches as they are
        trainer = trl.DPOTrainer(model=model, args=trl.DPOConfig(**common, beta=0.1, loss_type=["sigmoid"]),
                                 train_dataset=Dataset.from_dict({**rows, "images": [[]] * len(batches)}),
                                 processing_class=processor, data_collator=collate, callbacks=[StepTimes()])
    torch.manual_seed(0)
    trainer.train()
    return _result(st, times, loaded)


def _result(st, times: list[float], loaded: int) -> dict[str, Any]:
    steps_s = [b - a for a, b in itertools.pairwise(times)]
    rows = st.train.batch_size * (2 if st.kind == "align" else 1)
    per_step = sum(steps_s) / len(steps_s)
    return {"samples_per_s": round(st.train.batch_size / per_step, 3), "seconds_per_step": round(per_step, 3),
            "rows_per_step": rows, "peak_mb": round(peak_kb() / 1024), "load_peak_mb": round(loaded / 1024),
            "steps": len(times)}


def bench_peer(steps: int = 10) -> dict:
    """The four runs, each in a fresh process, and the ratios vlmforge / TRL."""
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-peer-") as tmp:
        run_worker("flows.bench.memory", ["prepare", tmp, "test"])
        runs = {name: json.loads(run_worker("flows.bench.peer", [name, tmp, str(steps)])) for name in RUNS}
    out: dict[str, Any] = {"model": "SmolVLM-256M shapes scaled down", "image_px": TILE, "steps": steps,
                           "sft_batch": SFT_BATCH, "dpo_pairs": DPO_PAIRS, "runs": runs}
    for kind in ("sft", "dpo"):
        ours, theirs = runs[f"vlmforge_{kind}"], runs[f"trl_{kind}"]
        out[f"{kind}_speed_ratio"] = round(ours["samples_per_s"] / theirs["samples_per_s"], 3)
        out[f"{kind}_memory_ratio"] = round(ours["peak_mb"] / theirs["peak_mb"], 3)
    return out


def table(result: dict) -> str:
    """The runs side by side with the ratios (what `vlmforge bench peer` prints without --json)."""
    lines = [f"{result['model']}, {result['image_px']} px, {result['steps']} steps: SFT batch "
             f"{result['sft_batch']}, DPO {result['dpo_pairs']} pairs (samples/s: steps after the first)",
             f"{'run':<16}{'samples/s':>11}{'s/step':>9}{'peak MB':>9}{'load MB':>9}"]
    for name, r in result["runs"].items():
        lines.append(f"{name:<16}{r['samples_per_s']:>11}{r['seconds_per_step']:>9}{r['peak_mb']:>9}"
                     f"{r['load_peak_mb']:>9}")
    for kind in ("sft", "dpo"):
        lines.append(f"{kind} vlmforge / TRL: speed {result[f'{kind}_speed_ratio']}, "
                     f"memory {result[f'{kind}_memory_ratio']}")
    return "\n".join(lines)


def _worker(argv: list[str]) -> None:
    name, root, steps = argv[0], Path(argv[1]), int(argv[2])
    side, kind = name.split("_")
    runner = run_vlmforge if side == "vlmforge" else run_trl
    print(json.dumps(runner(root, "sft" if kind == "sft" else "align", steps)))


if __name__ == "__main__":
    from flows.environment import configure_environment

    configure_environment()
    _worker(sys.argv[1:])

