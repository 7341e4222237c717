"""Resuming runs no code from the checkpoint: the LR scheduler is saved as plain numbers in
the loop state (no pickle), and a pickle planted in a checkpoint, its manifest rewritten to
match (whoever can write the shared home can do both), is never executed: a planted
scheduler pickle is ignored, a planted optimiser or RNG-state pickle is refused by
`weights_only=True` loading."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch

from components.training.checkpoints import MANIFEST_FILE, list_checkpoints, read_loop_state

_spec = importlib.util.spec_from_file_location("tiny_trainer",
                                               Path(__file__).with_name("tiny_trainer.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


class _Payload:
    """Unpickling this creates the file `path` (it calls `open(path, "w")`)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(step: Path, name: str, sentinel: Path) -> None:
    """Write a code-running pickle as `name` and make the manifest agree with it."""
    torch.save({"state": _Payload(sentinel)}, step / name)
    manifest = json.loads((step / MANIFEST_FILE).read_text())
    data = (step / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.fixture
def interrupted(tmp_path) -> Path:
    """A run stopped (SIGTERM) after step 4 of 6: its newest checkpoint, step 4."""
    ckpt = tmp_path / "ckpt"
    assert tiny.run(ckpt, stop_at=4) == {"interrupted_at": 4}
    assert list_checkpoints(ckpt)[-1][0] == 4
    return list_checkpoints(ckpt)[-1][1]


def test_the_scheduler_is_saved_as_numbers_not_a_pickle(interrupted):
    names = {p.name for p in interrupted.iterdir()}
    assert not {n for n in names if n.startswith(("custom_checkpoint", "scheduler"))}, names
    saved = read_loop_state(interrupted)["scheduler"]
    assert saved == {"last_epoch": 4, "_step_count": 5, "base_lrs": [0.01], "_last_lr": [0.01]}


def test_resume_restores_the_schedule_from_the_numbers(interrupted):
    reference = tiny.run(None)
    resumed = tiny.run(interrupted.parent)
    assert resumed["resumed_from"] == 4
    assert resumed["lrs"] == reference["lrs"] and resumed["lrs"][-1] == 0.0  # wsd decays to 0
    assert resumed["losses"] == reference["losses"]


def test_a_planted_scheduler_pickle_is_never_loaded(interrupted, tmp_path):
    """(accelerate refuses a custom-state file that no registered object claims.)"""
    sentinel = tmp_path / "code-ran"
    _plant(interrupted, "custom_checkpoint_0.pkl", sentinel)
    with pytest.raises(RuntimeError, match="custom checkpoints"):
        tiny.run(interrupted.parent)
    assert not sentinel.exists(), "resume executed a pickle from the checkpoint"


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl"])
def test_a_planted_state_pickle_is_refused_not_run(interrupted, tmp_path, name):
    sentinel = tmp_path / "code-ran"
    _plant(interrupted, name, sentinel)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        tiny.run(interrupted.parent)  # the RNG file too: accelerate alone would swallow that
    assert not sentinel.exists(), "resume executed a pickle from the checkpoint"
