"""One run per stage checkpoint directory: the run that trains a stage holds an exclusive
flock on `<dir>.lock`; a second run fails fast naming the holder's pid (and deletes
nothing, `--force` included); a lock whose holder was killed does not block."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from components.training.checkpoints import CheckpointInUse, CheckpointLock

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from components.training.checkpoints import CheckpointLock
lock = CheckpointLock(Path(sys.argv[1])).__enter__()
print("LOCKED", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock of `directory`; killed at the end."""
    procs = []

    def start(directory: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "LOCKED"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_run_fails_fast_naming_the_holder(tmp_path, holder):
    ckpt = tmp_path / "stage-abc"
    first = holder(ckpt)
    with pytest.raises(CheckpointInUse, match=rf"in use by another run .*\(pid {first.pid} on "):
        with CheckpointLock(ckpt):
            pass
    assert first.poll() is None  # the holder is untouched


def test_the_lock_of_a_killed_run_does_not_block(tmp_path, holder):
    ckpt = tmp_path / "stage-abc"
    first = holder(ckpt)
    first.send_signal(signal.SIGKILL)
    first.wait()
    lock_file = Path(f"{ckpt}.lock")
    assert json.loads(lock_file.read_text())["pid"] == first.pid  # left behind, not cleaned up
    with CheckpointLock(ckpt):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()


def test_a_lock_file_nobody_holds_does_not_block(tmp_path):
    ckpt = tmp_path / "stage-abc"
    Path(f"{ckpt}.lock").write_text('{"pid": 999999, "host": "gone"}')
    with CheckpointLock(ckpt):
        pass


def test_the_lock_survives_deleting_the_checkpoints_and_is_released(tmp_path):
    import shutil

    ckpt = tmp_path / "stage-abc"
    (ckpt / "step-00000002").mkdir(parents=True)
    with CheckpointLock(ckpt):
        shutil.rmtree(ckpt)  # what train_stage does once the version is registered
        with pytest.raises(CheckpointInUse, match=rf"pid {os.getpid()} "):
            with CheckpointLock(ckpt):  # flock: a second open file of the same process too
                pass
    with CheckpointLock(ckpt):  # released
        pass


def test_train_stage_holds_the_lock_before_force_deletes_anything(tmp_path, holder):
    """A forced re-run of a stage another run is training stops before touching its
    checkpoints (today's bug: `--force` deleted them under the running stage)."""
    from prefect import flow

    from components.data.version import DataVersion
    from components.recipe import load_recipe, stage_cache_key
    from flows.stages.backbones import BackboneOutcome
    from flows.stages.training import checkpoint_dir, train_stage

    recipe = load_recipe(ROOT / "configs" / "micro.yaml")
    stage = recipe.stages[0]
    data = DataVersion(str(tmp_path / "workspace"), "d0", {}, {})
    backbones = [BackboneOutcome(name, "1", "run", True, 0.0, 0)
                 for name in recipe.model.backbone_names()]
    parent = "backbones:" + ",".join(f"{b.name}={b.version}" for b in backbones)
    ckpt = checkpoint_dir(recipe, stage, stage_cache_key(recipe, stage, parent, data.version))
    (ckpt / "step-00000006").mkdir(parents=True)
    (ckpt / "step-00000006" / "model.safetensors").write_bytes(b"the first run's weights")
    first = holder(ckpt)

    @flow
    def second_run():
        return train_stage(recipe, stage, data, backbones, None, force=True)

    with pytest.raises(CheckpointInUse, match=rf"pid {first.pid} "):
        second_run()
    assert (ckpt / "step-00000006" / "model.safetensors").read_bytes() == b"the first run's weights"
