"""Fault injection: the resume tests' tiny training stage (resume_worker.py, real Idefics3,
real shards, run_stage, a checkpoint every 3 of 12 steps) runs in a subprocess that is
SIGKILLed at random moments, over and over on the same checkpoint directory, until the
wanted number of kills has landed; then a run is let finish. The checkpoint writer sleeps
between its steps (VLMFORGE_CHECKPOINT_WRITE_DELAY_S), so kills land mid-write: half the
kills come at a uniformly random moment of a run, half at a random moment after a write
has begun (alternately). Once per chain of runs the newest checkpoint is truncated on
purpose.

Checked: no run fails (each one is killed or finishes), every run that resumes does so
from the newest checkpoint that was complete and intact when it started (the one before
a corrupted one, with a warning naming it), and every finished chain ends with weights
and losses bit-identical to an uninterrupted run. Where each kill landed is read from the
directory the killed process left (`.tmp`: files being written or not yet renamed,
`.old`: between the two renames of a re-save, `.trash`: pruning); the test prints the
tally. `test_fault_injection_fast`: 4 kills; `-m slow`: 20."""

from __future__ import annotations

import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from components.data.corpus import generate_samples
from components.data.shards import write_shard
from components.training.checkpoints import (
    MANIFEST_FILE,
    WRITE_DELAY_ENV,
    list_checkpoints,
    verify_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "components" / "training" / "resume_worker.py"
WRITE_DELAY_S = 0.05
RUN_TIMEOUT_S = 300
_RESUMED = re.compile(r"resumed from checkpoint (\S+) at step (\d+) of")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("faults")
    write_shard(generate_samples("scenes_vqa", 0, "train", 0, 24, image_size=32),
                root / "shards" / "train" / "scenes_vqa-0000.tar")
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "shards", root / "tokenizer"


@dataclass
class Run:
    rc: int
    killed: bool
    out: str
    err: str
    train_s: float  # START to exit


def _launch(inputs, ckpt: Path, weights: Path, log: Path, kill_at=None) -> Run:
    """Run the worker; `kill_at(proc, started)` (in a thread) decides when to SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               **{WRITE_DELAY_ENV: str(WRITE_DELAY_S)})
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, inputs), str(ckpt),
                                 str(weights)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
        reader.start()
        out, started, killed = [], None, False
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while proc.poll() is None or not lines.empty() or reader.is_alive():
            try:
                line = lines.get(timeout=0.01)
                out.append(line)
                if line.strip() == "START":
                    started = time.monotonic()
            except queue.Empty:
                pass
            if kill_at is not None and started is not None and not killed and proc.poll() is None:
                if kill_at(started):
                    proc.kill()
                    killed = True
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"worker ran over {RUN_TIMEOUT_S}s")
        proc.wait()
    return Run(proc.returncode, killed and proc.returncode == -9, "".join(out), log.read_text(),
               time.monotonic() - (started or time.monotonic()))


def _newest_intact(ckpt: Path) -> int:
    """The step a run started now must resume from (0: a fresh start)."""
    for step, path in reversed(list_checkpoints(ckpt)):
        if verify_checkpoint(path) is None:
            return step
    return 0


def _partials(ckpt: Path) -> dict[str, tuple[int, int]]:
    """Unfinished writes in `ckpt` (name -> inode, mtime), to tell a new one from a leftover."""
    if not ckpt.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in ckpt.iterdir()
            if p.suffix in (".tmp", ".old", ".trash")}


def _new_write(ckpt: Path, before: dict) -> set[str]:
    """The unfinished writes in `ckpt` that were not there (as they are) in `before`."""
    try:
        return {n for n, ident in _partials(ckpt).items() if before.get(n) != ident}
    except FileNotFoundError:  # deleted while listed
        return set()


def _where(ckpt: Path, before: dict) -> str:
    """Where a kill landed, from what the killed writer left."""
    new = _new_write(ckpt, before)
    if any(n.endswith(".trash") for n in new):
        return "mid-write: pruning an old checkpoint"
    if any(n.endswith(".old") for n in new):
        return "mid-write: between the two renames of a re-save"
    tmp = [n for n in new if n.endswith(".tmp")]
    if tmp:
        return ("mid-write: complete, not yet renamed" if (ckpt / tmp[0] / MANIFEST_FILE).exists()
                else "mid-write: files being written")
    return "outside a checkpoint write"


def _corrupt_newest(ckpt: Path) -> tuple[int, int] | None:
    """Truncate the newest intact checkpoint's weights (when an older intact one exists):
    (its step, the step to fall back to)."""
    intact = [s for s, p in list_checkpoints(ckpt) if verify_checkpoint(p) is None]
    if len(intact) < 2:
        return None
    weights = ckpt / f"step-{intact[-1]:08d}" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return intact[-1], intact[-2]


@dataclass
class _KillPlan:
    """When to SIGKILL a run: `delay` s after START ("any"), or `delay` s after a new
    checkpoint write appeared ("write": a fallback's run is killed that way too, so its
    resume is seen)."""

    mode: str
    delay: float
    ckpt: Path
    before: dict
    write_seen: float | None = None

    def __call__(self, started: float) -> bool:
        if self.mode == "any":
            return time.monotonic() - started >= self.delay
        if self.write_seen is None and _new_write(self.ckpt, self.before):
            self.write_seen = time.monotonic()  # not a leftover of an earlier killed run
        return self.write_seen is not None and time.monotonic() - self.write_seen >= self.delay


@dataclass
class Campaign:
    target: int
    reference: dict
    span_s: float
    kills: int = 0
    landed: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    resumes_checked: int = 0
    fallbacks_checked: int = 0
    chains: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_kill(self) -> bool:
        with self.lock:
            if self.kills >= self.target:
                return False
            self.kills += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.kills -= 1

    def summary(self) -> str:
        return (f"{self.kills} kills ({dict(self.modes)}), {_mid_write(self)} mid-write: "
                f"{dict(sorted(self.landed.items()))}; {self.resumes_checked} resumes checked, "
                f"{self.fallbacks_checked} fallbacks from a corrupted newest checkpoint; "
                f"chains: {self.chains}")


def _check_resume(campaign: Campaign, run: Run, expected: int, fallback: tuple[int, int] | None,
                  history: list[str]) -> None:
    """The run did not fail, and resumed (if it got that far) from step `expected`, warning
    about the corrupted checkpoint when there is one."""
    assert "Traceback" not in run.err, run.err[-4000:]
    assert run.killed or run.rc == 0, (run.rc, run.err[-4000:])
    m = _RESUMED.search(run.err)
    if m is not None:
        assert int(m[2]) == expected, (f"resumed from step {m[2]}, the newest intact "
                                       f"checkpoint was {expected}", history)
        with campaign.lock:
            campaign.resumes_checked += 1
    elif run.rc == 0:
        assert expected == 0, f"the run started afresh over checkpoint {expected}"
    if fallback and m is not None:
        assert f"step-{fallback[0]:08d}" in run.err and "is unusable" in run.err, run.err
        with campaign.lock:
            campaign.fallbacks_checked += 1


def _chain(campaign: Campaign, inputs, root: Path, rng: random.Random) -> None:
    """Kill runs on one checkpoint directory until the campaign's kills are used, then let
    one finish and compare it with the reference."""
    ckpt = root / "ckpt"
    corrupted, kills_here, history = False, 0, []
    for attempt in range(100):
        expected, fallback = _newest_intact(ckpt), None
        if kills_here >= 2 and not corrupted and (fallback := _corrupt_newest(ckpt)):
            corrupted, expected = True, fallback[1]
        kill = campaign.take_kill()
        mode = ("write" if kills_here % 2 == 0 or fallback else "any") if kill else "none"
        before = _partials(ckpt)
        plan = _KillPlan(mode, rng.uniform(0, campaign.span_s if mode == "any" else 0.6),
                         ckpt, before)

        run = _launch(inputs, ckpt, root / f"weights-{attempt}.pt", root / f"err-{attempt}.txt",
                      plan if kill else None)
        _check_resume(campaign, run, expected, fallback, history)
        if run.killed:
            kills_here += 1
            where = _where(ckpt, before)
            history.append(f"{mode}:{where}")
            with campaign.lock:
                campaign.landed[where] += 1
                campaign.modes[mode] += 1
            continue
        if kill:
            campaign.give_back()  # it finished before the kill came
        result = json.loads(run.out.split("RESULT ", 1)[1])
        assert result["losses"] == campaign.reference["losses"], history
        assert result["samples"] == campaign.reference["samples"]
        final = torch.load(root / f"weights-{attempt}.pt", weights_only=True)
        for k, v in campaign.reference["weights"].items():
            assert torch.equal(final[k], v), (k, history)
        with campaign.lock:
            campaign.chains.append(f"{kills_here} kills, bit-identical")
        return
    raise AssertionError(f"no run finished in 100 attempts: {history}")


def _campaign(inputs, tmp_path: Path, kills: int, parallel: int, seed: int) -> Campaign:
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    ref = _launch(inputs, ref_dir / "ckpt", ref_dir / "weights.pt", ref_dir / "err.txt")
    assert ref.rc == 0, ref.err[-4000:]
    reference = {**json.loads(ref.out.split("RESULT ", 1)[1]),
                 "weights": torch.load(ref_dir / "weights.pt", weights_only=True)}
    campaign = Campaign(kills, reference, span_s=ref.train_s)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        try:
            for chain in range(50):
                if campaign.kills >= campaign.target:
                    return
                root = tmp_path / f"w{index}-chain{chain}"
                root.mkdir()
                _chain(campaign, inputs, root, rng)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    print(f"\nfault injection: {campaign.summary()}")
    assert campaign.kills == kills
    return campaign


def _mid_write(campaign: Campaign) -> int:
    return sum(n for where, n in campaign.landed.items() if where.startswith("mid-write"))


@pytest.mark.slow  # ~40 s; the durability and verify tests stay fast (make test-slow)
def test_fault_injection_fast(inputs, tmp_path):
    campaign = _campaign(inputs, tmp_path, kills=4, parallel=2, seed=1)
    assert campaign.resumes_checked >= 1 and _mid_write(campaign) >= 1, campaign.summary()


@pytest.mark.slow
def test_fault_injection_twenty_kills(inputs, tmp_path):
    campaign = _campaign(inputs, tmp_path, kills=20, parallel=2, seed=2)
    assert _mid_write(campaign) >= 5, campaign.summary()
    assert campaign.fallbacks_checked >= 1, campaign.summary()
