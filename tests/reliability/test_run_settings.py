"""A checkpoint records the world size, per-process batch size and gradient accumulation it
was written with; resuming under other values (which would replay or skip batches) is
refused with a message naming both values. The world size with real processes: written
by 2 gloo ranks under `accelerate launch`, resumed by 1."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.training.checkpoints import CheckpointMismatch, list_checkpoints, read_loop_state

ROOT = Path(__file__).resolve().parents[2]
TRAINER = Path(__file__).with_name("tiny_trainer.py")
_spec = importlib.util.spec_from_file_location("tiny_trainer", TRAINER)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def _interrupted(ckpt: Path, **settings) -> None:
    """A run stopped (SIGTERM) after step 3 of 6: its newest checkpoint holds step 3."""
    assert tiny.run(ckpt, stop_at=3, **settings) == {"interrupted_at": 3}
    assert list_checkpoints(ckpt)[-1][0] == 3


def test_a_checkpoint_records_the_run_settings(tmp_path):
    _interrupted(tmp_path / "ck", batch_size=3, grad_accum=2)
    state = read_loop_state(list_checkpoints(tmp_path / "ck")[-1][1])
    assert state["run"] == {"world_size": 1, "batch_size": 3, "grad_accum": 2}


def test_another_per_process_batch_size_is_refused(tmp_path):
    _interrupted(tmp_path / "ck", batch_size=2)
    with pytest.raises(CheckpointMismatch,
                       match="was written with per-process batch size 2, this run has 3"):
        tiny.run(tmp_path / "ck", batch_size=3)


def test_another_gradient_accumulation_is_refused(tmp_path):
    _interrupted(tmp_path / "ck", grad_accum=1)
    with pytest.raises(CheckpointMismatch,
                       match="was written with 1 gradient accumulation steps, this run has 2"):
        tiny.run(tmp_path / "ck", grad_accum=2)


def test_the_same_settings_resume(tmp_path):
    _interrupted(tmp_path / "ck", batch_size=3)
    resumed = tiny.run(tmp_path / "ck", batch_size=3)
    assert resumed["resumed_from"] == 3
    assert resumed["losses"] == tiny.run(None, batch_size=3)["losses"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def test_a_two_process_checkpoint_is_refused_by_one_process(tmp_path):
    from components.training.distributed import launch_command

    ckpt = tmp_path / "ck"
    two = subprocess.run(launch_command([str(TRAINER), str(ckpt), str(tmp_path / "two"),
                                         "--steps", "4"], num_processes=2, cpu=True),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    assert read_loop_state(list_checkpoints(ckpt)[-1][1])["run"]["world_size"] == 2
    one = subprocess.run([sys.executable, str(TRAINER), str(ckpt), str(tmp_path / "one"),
                          "--steps", "4"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert one.returncode != 0, "a 2-process checkpoint was resumed by 1 process"
    assert "CheckpointMismatch" in one.stderr
    assert "step-00000004 was written by 2 processes, this run has 1" in one.stderr, one.stderr[-3000:]
    assert not (tmp_path / "one").exists()
    # the 2-process run's own result: both ranks wrote theirs
    assert json.loads((tmp_path / "two" / "rank1.json").read_text())["steps"] == 4
