"""Resumable training checkpoints: `accelerate save_state` plus the loop's own position.

A checkpoint is a directory `<dir>/step-00000040/` holding what `Accelerator.save_state`
writes (model, optimiser, registered scheduler, RNG states of every process) and
`loop_state.json` (optimiser steps done, samples seen, logged history, the open log window).
It is written as `step-N.tmp` and renamed when complete, so a process killed mid-save
leaves no half checkpoint behind; only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

STATE_FILE = "loop_state.json"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first, as (step, path)."""
    if not Path(root).is_dir():
        return []
    found = []
    for path in Path(root).iterdir():
        m = _NAME.match(path.name)
        if m and (path / STATE_FILE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path | None) -> Path | None:
    found = list_checkpoints(root) if root is not None else []
    return found[-1][1] if found else None


def remove_partial(root: Path) -> None:
    """Drop `*.tmp` directories left by a process killed while saving."""
    if Path(root).is_dir():
        for path in Path(root).glob("step-*.tmp"):
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(accel: Accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Save the accelerator's state and `state` (JSON) as checkpoint `step`; every process
    must call this. Returns the checkpoint directory."""
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / (final.name + ".tmp")
    if accel.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accel.wait_for_everyone()
    accel.save_state(str(tmp))
    accel.wait_for_everyone()
    if accel.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, old in list_checkpoints(root)[:-max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accel.wait_for_everyone()
    return final


def read_loop_state(path: Path) -> dict:
    """The loop state saved with checkpoint `path` (read before `accel.load_state`, so the
    batch stream can be fast-forwarded before the RNG states are restored)."""
    return json.loads((Path(path) / STATE_FILE).read_text())
