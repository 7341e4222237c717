"""Resumable training: kill -9 a real training process after a checkpoint, re-run it, and it
resumes at the checkpoint's step and data position and ends with the uninterrupted run's
losses; the same under DDP (2 gloo ranks, bit-identical, every rank's files in the
manifest); SIGTERM saves a checkpoint and stops cleanly; the WSD schedule and the padding
metric. Crashes, corruption, locks and run-shape checks: tests/reliability/."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.recipe import TrainSettings
from components.training.checkpoints import list_checkpoints, verify_checkpoint
from components.training.loop import (
    TrainingInterrupted,
    train,
    warmup_cosine,
    warmup_stable_decay,
)

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("resume_worker.py")
_spec = importlib.util.spec_from_file_location("resume_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("resume")
    write_shard(generate_samples("scenes_vqa", 0, "train", 0, 24, image_size=32),
                root / "shards" / "train" / "scenes_vqa-0000.tar")
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "shards", root / "tokenizer"


def _one_thread(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the single-threaded worker process
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(inputs):
    return _one_thread(lambda: worker.run(*inputs, checkpoint_dir=None))


def _worker(inputs, ckpt: Path, sleep: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               VLMFORGE_TEST_STEP_SLEEP=str(sleep))
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, inputs), str(ckpt)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_after_a_checkpoint_then_rerun_resumes_with_the_same_final_loss(
        inputs, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = _worker(inputs, ckpt, sleep=0.3)
    deadline = time.monotonic() + 120
    while not list_checkpoints(ckpt):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no chance to save anything more
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = list_checkpoints(ckpt)[-1][0]
    assert 0 < killed_at < worker.STEPS and "RESULT" not in out

    proc = _worker(inputs, ckpt, sleep=0.0)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    resumed = json.loads(out.split("RESULT ", 1)[1])
    assert resumed["resumed_from"] == killed_at and killed_at % worker.CHECKPOINT_EVERY == 0
    first_step = json.loads(next(x for x in out.splitlines() if x.startswith("{")))["step"]
    assert first_step > killed_at  # the re-run did not redo the checkpointed steps
    assert resumed["steps"] == worker.STEPS and resumed["samples"] == uninterrupted["samples"]
    assert abs(resumed["final_loss"] - uninterrupted["final_loss"]) < 1e-4
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"], abs=1e-4)
    assert len(list_checkpoints(ckpt)) <= 2  # old checkpoints pruned (keep 2)
    assert not list(ckpt.glob("*.tmp"))


def test_sigterm_saves_a_checkpoint_and_stops_then_resumes(inputs, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"

    def terminate_at_step_4(step, row):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        _one_thread(lambda: worker.run(*inputs, ckpt, on_log=terminate_at_step_4))
    assert stopped.value.code == 143 and stopped.value.step == 4  # not a multiple of 3
    assert list_checkpoints(ckpt)[-1][0] == 4
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was put back
    resumed = _one_thread(lambda: worker.run(*inputs, ckpt))
    assert resumed["resumed_from"] == 4
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"], abs=1e-4)


def test_padding_fraction_and_wsd_lr_are_logged_per_step(backbones, tokenizer):
    from PIL import Image

    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder, collate

    encoder = ChatEncoder(build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                          scale_factor=2), max_length=128)
    items = [encoder.encode([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
                             {"role": "assistant", "content": [{"type": "text", "text": "red"}]}],
                            [Image.new("RGB", (32, 32), "red")])
             for q in ("Colour?", "What colour is the circle at the top left of the image?")]
    batch = collate(items, tokenizer.pad_token_id)
    mask = batch["attention_mask"]
    expected = 1 - mask.sum().item() / mask.numel()
    assert expected > 0.1
    logged = []
    train(assemble_idefics3(*backbones, tokenizer, scale_factor=2), [batch],
          TrainSettings(steps=10, lr=1e-3, warmup_steps=2, log_every=1, schedule="wsd", decay_fraction=0.5),
          on_log=lambda step, row: logged.append(row))
    assert [r["padding_fraction"] for r in logged] == pytest.approx([expected] * 10)
    # logged after step s: the lr of step s+1; warmup 2, plateau, the last 5 steps decay to 0
    assert [r["lr"] for r in logged] == pytest.approx([1e-3 * f for f in
                                                       (1, 1, 1, 1, 1, .8, .6, .4, .2, 0)])


def test_wsd_schedule_warms_up_holds_then_decays_to_zero():
    lrs = [warmup_stable_decay(s, warmup=5, total=100, decay_fraction=0.2) for s in range(100)]
    assert lrs[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert set(lrs[5:80]) == {1.0}
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:], strict=False)) and lrs[-1] == 0.05
    assert warmup_stable_decay(100, 5, 100, 0.2) == 0.0
    assert warmup_cosine(99, 5, 100) < 1e-3 < warmup_cosine(50, 5, 100) < 1.0


@pytest.mark.slow  # 2 processes killed and resumed, ~20 s (make test-slow)
def test_two_process_ddp_run_resumes_bit_identically(tmp_path):
    """2 gloo ranks: a full run checkpoints at steps 4 and 6; a second run given only the step-4
    checkpoint resumes there and ends with the same weights and losses on both ranks."""
    import shutil

    from components.training.distributed import launch_command

    probe = Path(__file__).with_name("ddp_resume_probe.py")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def launch(name: str, ckpt: Path) -> Path:
        out = tmp_path / name
        out.mkdir()
        done = subprocess.run(launch_command([str(probe), str(out), str(ckpt)], num_processes=2,
                                             cpu=True),
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        return out

    full = launch("full", tmp_path / "ck-full")
    assert [s for s, _ in list_checkpoints(tmp_path / "ck-full")] == [4, 6]
    step4 = tmp_path / "ck-full" / "step-00000004"
    manifest = json.loads((step4 / "manifest.json").read_text())["files"]
    assert {"random_states_0.pkl", "random_states_1.pkl", "loop_state.json"} <= set(manifest)
    assert verify_checkpoint(step4) is None  # rank 1's file fsynced and hashed by rank 0
    assert json.loads((step4 / "loop_state.json").read_text())["run"]["world_size"] == 2
    shutil.copytree(tmp_path / "ck-full" / "step-00000004", tmp_path / "ck-resume" / "step-00000004")
    resumed = launch("resumed", tmp_path / "ck-resume")
    for rank in (0, 1):
        a = torch.load(full / f"rank{rank}.pt", weights_only=False)
        b = torch.load(resumed / f"rank{rank}.pt", weights_only=False)
        assert a["resumed_from"] == 0 and b["resumed_from"] == 4
        assert b["losses"] == a["losses"]
        for k, v in a["after"].items():
            assert torch.equal(v, b["after"][k]), (rank, k)
