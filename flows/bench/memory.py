"""`vlmforge bench memory`: peak resident memory and seconds per step of the SmolVLM-256M-shaped
model (flows/bench/smolvlm_shape.py: hub shapes, random weights) for SFT and align steps at a
fixed batch and sequence length, one memory setting per row:

- SFT: full fine-tuning (every group full), LoRA (vision and LM, connector full), each with
  gradient checkpointing, and full in bf16; ratios against full fine-tuning;
- align (one preference pair = two rows a step, like the SFT batch): full fine-tuning with a
  copied reference vs cached reference log-probs, and LoRA with a copied reference vs the
  adapters switched off; ratios against the copy of the same policy.

The VLM is assembled once and saved; each setting then runs in a fresh Python process that
loads it as a later stage does (`build_stage_model` from the saved folder, in the stage's
dtype), resets the kernel's peak-RSS counter (/proc/self/clear_refs), runs `run_stage` for
`steps` steps on the same seeded batches (pre-flight checks skipped: they run once per stage,
not per step) and reports VmHWM (the peak of the stage: model, optimiser, reference, cache
pass, activations), the mean wall time of the steps after the first and the stage's wall time
(what a cached reference computes before the first step included).

The workers run with glibc's mmap threshold fixed at its initial 128 KiB
(``MALLOC_MMAP_THRESHOLD_``, unless set): by default glibc raises the threshold as large
blocks are freed, then serves activation buffers from the heap and keeps them resident after
they are freed, which inflated one setting's peak by 65 % (LoRA SFT: 5,591 MB vs 3,385 MB with
the threshold fixed, same step time) and made the peaks depend on allocation history.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from flows.bench.smolvlm_shape import REAL, TEST, TILE, Scale

FULL = {"vision": "full", "connector": "full", "text": "full"}
LORA = {"vision": "lora", "connector": "full", "text": "lora"}
LORA_TEXT = {"vision": "frozen", "connector": "frozen", "text": "lora"}
# name -> (kind, unfreeze, stage options, the row its ratios compare with)
SETTINGS: dict[str, tuple[str, dict, dict, str]] = {
    "sft_full": ("sft", FULL, {}, "sft_full"),
    "sft_full_checkpointing": ("sft", FULL, {"gradient_checkpointing": True}, "sft_full"),
    "sft_full_bf16": ("sft", FULL, {"dtype": "bf16"}, "sft_full"),
    "sft_lora": ("sft", LORA, {}, "sft_full"),
    "sft_lora_checkpointing": ("sft", LORA, {"gradient_checkpointing": True}, "sft_full"),
    "align_full_copy": ("align", FULL, {"reference": "copy"}, "align_full_copy"),
    "align_full_cached": ("align", FULL, {"reference": "cached"}, "align_full_copy"),
    "align_lora_copy": ("align", LORA_TEXT, {"reference": "copy"}, "align_lora_copy"),
    "align_lora_adapters": ("align", LORA_TEXT, {"reference": "adapters"}, "align_lora_copy"),
}
SFT_BATCH, ALIGN_BATCH, MAX_LENGTH = 2, 1, 512  # rows per step: 2 either way (a pair: 2 rows)
SOURCES = {"sft": ["scenes_vqa"], "align": ["preference"]}


def stage_section(name: str, steps: int) -> dict[str, Any]:
    kind, unfreeze, options, _ = SETTINGS[name]
    batch = SFT_BATCH if kind == "sft" else ALIGN_BATCH
    return {"name": name.replace("_", "-"), "kind": kind, "longest_edge": TILE,
            "sources": SOURCES[kind], "unfreeze": unfreeze, "lora_rank": 32, **options,
            "train": {"steps": steps, "batch_size": batch, "lr": 1e-5, "warmup_steps": 1,
                      "log_every": 1}}


def peak_kb() -> int:
    """This process's peak resident set (VmHWM) since start or the last `reset_peak`."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


# ---- what each fresh process runs ---------------------------------------------------------


def prepare(root: Path, scale: Scale) -> None:
    """Shards, hub-layout backbones and the assembled VLM saved under ``root``."""
    from components.model.build import build_stage_model, save_vlm
    from flows.bench.smolvlm_shape import local_recipe, write_backbones, write_shards

    shards = write_shards(root / "shards", {"train": {"scenes_vqa": 16, "preference": 16}})
    vision, text = write_backbones(root / "hub", shards, scale)
    recipe = local_recipe(vision, text, [stage_section("sft_full", 1)])
    model, processor, _ = build_stage_model(recipe.model, seed=0, parent_dir=None, registered={},
                                            longest_edge=TILE, unfreeze=FULL, lora_rank=8)
    save_vlm(model, processor, root / "vlm")


def measure(root: Path, name: str, steps: int) -> dict[str, Any]:
    """One setting's stage on the saved VLM: peak RSS of the stage and seconds per step."""
    import torch
    import yaml

    import components.training.stage as stage_module
    from components.model.build import build_stage_model
    from components.model.spec import ModelSpec
    from components.recipe import parse_stage
    from flows.bench.smolvlm_shape import RECIPE

    stage = parse_stage(stage_section(name, steps))
    model, processor, counts = build_stage_model(
        ModelSpec.model_validate(yaml.safe_load(RECIPE.read_text())["model"]), seed=0,
        parent_dir=root / "vlm", registered={}, longest_edge=TILE,
        unfreeze=stage.unfreeze, lora_rank=stage.lora_rank, dtype=stage.dtype)
    loaded = peak_kb()
    reset_peak()
    times: list[float] = []
    logged: list[dict] = []
    start = time.perf_counter()
    with mock.patch.object(stage_module, "run_preflight", lambda *a, **k: None):  # once a stage
        stage_module.run_stage(model, processor, stage, root / "shards", seed=0, max_length=MAX_LENGTH,
                               on_log=lambda step, row: (times.append(time.perf_counter()),
                                                         logged.append(row)))
    stage_s = time.perf_counter() - start
    steps_s = [b - a for a, b in zip(times, times[1:], strict=False)]
    tokens_per_row = sum(r["tokens_per_s"] / r["samples_per_s"] for r in logged) / len(logged)
    return {"setting": name, "peak_mb": round(peak_kb() / 1024), "load_peak_mb": round(loaded / 1024),
            "seconds_per_step": round(sum(steps_s) / len(steps_s), 2) if steps_s else None,
            "stage_seconds": round(stage_s, 1),
            "tokens_per_step": round(tokens_per_row * 2), "trainable_m": round(sum(counts.values()) / 1e6, 1),
            "threads": torch.get_num_threads()}


def _worker(argv: list[str]) -> None:
    command, root = argv[0], Path(argv[1])
    if command == "prepare":
        prepare(root, TEST if argv[2] == "test" else REAL)
        return
    print(json.dumps(measure(root, argv[2], int(argv[3]))))


# ---- the bench -----------------------------------------------------------------------------


MMAP_THRESHOLD = "131072"  # glibc's initial value, held fixed (see the module's docstring)


def run_worker(module: str, args: list[str]) -> str:
    """A fresh Python process running ``module``'s worker; its last line of output."""
    env = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, **os.environ}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def bench_memory(steps: int = 3, scale: str = "real", settings: tuple[str, ...] = tuple(SETTINGS)) -> dict:
    """Every setting in a fresh process, side by side; ratios against its baseline row."""
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-memory-") as tmp:
        run_worker("flows.bench.memory", ["prepare", tmp, scale])
        rows = {name: json.loads(run_worker("flows.bench.memory", ["measure", tmp, name, str(steps)]))
                for name in settings}
    for name, row in rows.items():
        base = rows.get(SETTINGS[name][3])
        if base is not None:
            row["memory_ratio"] = round(row["peak_mb"] / base["peak_mb"], 3)
            if row["seconds_per_step"] and base["seconds_per_step"]:
                row["time_ratio"] = round(row["seconds_per_step"] / base["seconds_per_step"], 3)
    return {"model": "SmolVLM-256M-shaped (SigLIP-B/16-512 + SmolLM2-135M, random weights)"
                     if scale == "real" else "SmolVLM-256M shapes scaled down",
            "image_px": TILE, "rows_per_step": 2, "steps": steps,
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
            "settings": rows}


def table(result: dict) -> str:
    """The settings side by side (what `vlmforge bench memory` prints without --json)."""
    head = (f"{'setting':<24}{'peak MB':>9}{'ratio':>7}{'s/step':>8}{'ratio':>7}{'stage s':>9}"
            f"{'tokens':>8}{'trainable M':>13}")
    lines = [f"{result['model']}, {result['image_px']} px, {result['rows_per_step']} rows a step, "
             f"{result['steps']} steps (s/step: mean after the first)", head]
    for name, r in result["settings"].items():
        lines.append(f"{name:<24}{r['peak_mb']:>9}{r.get('memory_ratio', ''):>7}"
                     f"{r['seconds_per_step'] or '':>8}{r.get('time_ratio', ''):>7}"
                     f"{r['stage_seconds']:>9}{r['tokens_per_step']:>8}{r['trainable_m']:>13}")
    return "\n".join(lines)


if __name__ == "__main__":
    from flows.environment import configure_environment

    configure_environment()
    _worker(sys.argv[1:])
