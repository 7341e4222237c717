"""Resumable training checkpoints: durable, verified, one writer per directory.

A checkpoint is a directory `<dir>/step-00000040/` holding what `Accelerator.save_state`
writes (model weights as safetensors, the optimiser state, every process's RNG states),
`loop_state.json` (optimiser steps done, samples seen, logged history, the open log
window, the LR scheduler's counters as plain numbers, and the world size, per-process
batch size and gradient accumulation of the run that wrote it) and, written last,
`manifest.json`: the name, size and sha256 of every other file.

Writing: everything goes to `step-N.tmp`; every file and directory is fsynced, the
manifest is written and fsynced, and only then is the directory renamed to `step-N` (the
parent fsynced before and after). A checkpoint of the same step that already exists is
first renamed `step-N.old`, which still counts as that step's checkpoint until the new one
is in place, so no moment leaves neither. Pruned checkpoints are renamed `*.trash` before
they are deleted. `tidy` clears what a killed writer left (`.tmp`, `.trash`, `.old`).

Reading: `newest_verified` checks the manifest of the newest checkpoint (sizes, then
hashes) and falls back to the one before, with a warning naming the skipped checkpoint
and why, so a truncated or corrupt newest checkpoint (a host crash, a full disk) costs
the steps since the previous one, not the run. Nothing is loaded with pickle's full
power: the scheduler is JSON, accelerate loads the optimiser and RNG states with
`weights_only=True`.

`CheckpointLock` makes one run at a time own a stage's checkpoint directory (flock on a
sibling `<dir>.lock`): a second run fails fast naming the holder; the kernel drops the
lock of a dead process, so a crashed run never blocks the next.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lock is taken by processes that never import accelerate
    from accelerate import Accelerator

STATE_FILE = "loop_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# fault-injection tests only: seconds the writer sleeps between its steps, so that a kill
# lands mid-write
WRITE_DELAY_ENV = "VLMFORGE_CHECKPOINT_WRITE_DELAY_S"
_NAME = re.compile(r"^step-(\d+)(\.old)?$")
_CHUNK = 1 << 20
# the settings a checkpoint's data position and step size depend on
RUN_SETTINGS = {"world_size": "was written by {} processes, this run has {}",
                "batch_size": "was written with per-process batch size {}, this run has {}",
                "grad_accum": "was written with {} gradient accumulation steps, this run has {}"}
SCHEDULER_KEYS = ("last_epoch", "_step_count", "base_lrs", "_last_lr")
log = logging.getLogger(__name__)


class CheckpointMismatch(RuntimeError):
    """The checkpoint was written by a run with other settings: resuming would replay or
    skip batches, so the run stops instead."""


class CheckpointInUse(RuntimeError):
    """Another live process holds the checkpoint directory's lock."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# ---- listing and verifying ---------------------------------------------------------------


def list_checkpoints(root: Path | None) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (renamed into place, manifest present), oldest
    first, as (step, path); not yet verified. `step-N.old` stands in for a missing `step-N`
    (a writer killed between its two renames)."""
    if root is None or not Path(root).is_dir():
        return []
    found: dict[int, Path] = {}
    for path in Path(root).iterdir():
        m = _NAME.match(path.name)
        if m and (path / MANIFEST_FILE).is_file():
            step = int(m.group(1))
            if step not in found or not m.group(2):
                found[step] = path
    return sorted(found.items())


def verify_checkpoint(path: Path) -> str | None:
    """Why checkpoint `path` is unusable (a missing, truncated or altered file), or None."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text())
        files = {name: (int(f["size"]), str(f["sha256"])) for name, f in manifest["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"unreadable {MANIFEST_FILE} ({type(e).__name__}: {e})"
    if manifest.get("format") != MANIFEST_FORMAT or STATE_FILE not in files:
        return f"{MANIFEST_FILE} is not a format-{MANIFEST_FORMAT} manifest listing {STATE_FILE}"
    for name, (size, _) in files.items():  # sizes first: cheap, and what a crash truncates
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing"
        if (found := file.stat().st_size) != size:
            return f"{name} has {found} bytes, the manifest says {size}"
    for name, (_, sha256) in files.items():
        if _sha256(Path(path) / name) != sha256:
            return f"{name} does not match its sha256 in the manifest"
    return None


def newest_verified(root: Path | None) -> Path | None:
    """The newest checkpoint under `root` that passes `verify_checkpoint`; every newer one
    that does not is named in a warning with the reason."""
    if root is not None and Path(root).is_dir():
        for path in sorted(Path(root).iterdir()):
            if _NAME.match(path.name) and not (path / MANIFEST_FILE).exists():
                log.warning("checkpoint %s has no %s (written before checkpoints were verified, "
                            "or not by vlmforge): ignored", path, MANIFEST_FILE)
    for step, path in reversed(list_checkpoints(root)):
        reason = verify_checkpoint(path)
        if reason is None:
            return path
        log.warning("checkpoint %s (step %d) is unusable: %s; falling back to an older one",
                    path, step, reason)
    return None


# ---- writing -----------------------------------------------------------------------------


def tidy(root: Path) -> None:
    """Clear what a killed writer left: `.tmp` (unfinished) and `.trash` (being pruned)
    directories are deleted, a `step-N.old` is deleted when `step-N` is in place and
    renamed back to `step-N` when it is not."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.suffix in (".tmp", ".trash") and path.name.startswith("step-"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix == ".old" and _NAME.match(path.name):
            final = path.with_suffix("")
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)
    _fsync_dir(root)


def save_checkpoint(accel: Accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Save the accelerator's state and `state` (JSON) as checkpoint `step`, durably; every
    process must call this. Checkpoints newer than `step` (skipped as unusable when this
    run resumed) and all but the newest `keep` are deleted. Returns the checkpoint."""
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = final.with_name(final.name + ".tmp")
    if accel.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accel.wait_for_everyone()
    accel.save_state(str(tmp))
    accel.wait_for_everyone()
    if accel.is_main_process:
        pause = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        _pause(pause)
        _write_durably(tmp / STATE_FILE, json.dumps(state).encode())
        _pause(pause)
        _write_manifest(tmp, pause)
        _pause(pause)
        _publish(tmp, final, pause)
        _prune(root, step, keep, pause)
    accel.wait_for_everyone()
    return final


def _write_manifest(tmp: Path, pause: float) -> None:
    """fsync and hash every file (any rank's) and directory under `tmp`, then write the
    manifest, the file whose presence makes the checkpoint complete."""
    files = {}
    for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
        files[file.relative_to(tmp).as_posix()] = {"size": file.stat().st_size,
                                                   "sha256": _sha256(file, fsync=True)}
        _pause(pause)
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    _write_durably(tmp / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(folder)
    _fsync_dir(tmp)
    _fsync_dir(tmp.parent)


def _publish(tmp: Path, final: Path, pause: float) -> None:
    """Rename `tmp` to `final`; an existing `final` steps aside as `final.old` first (still
    listed as the step's checkpoint) and is deleted once the new one is in place."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        _fsync_dir(final.parent)
        _pause(pause)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        _pause(pause)
        shutil.rmtree(old)


def _prune(root: Path, step: int, keep: int, pause: float) -> None:
    found = list_checkpoints(root)
    newer = [p for s, p in found if s > step]  # unusable ones this run resumed past
    older = [p for s, p in found if s <= step][:-max(1, keep)]
    for path in newer + older:
        trash = path.with_name(path.name + ".trash")
        os.replace(path, trash)  # no longer listed, even if the delete is cut short
        _pause(pause)
        shutil.rmtree(trash, ignore_errors=True)
    if newer or older:
        _fsync_dir(root)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path, fsync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        if fsync:  # flushes the inode's data whichever process wrote it
            os.fsync(f.fileno())
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make the directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


# ---- reading -----------------------------------------------------------------------------


def read_loop_state(path: Path) -> dict:
    """The loop state saved with checkpoint `path` (read before `accel.load_state`, so the
    batch stream can be fast-forwarded before the RNG states are restored)."""
    return json.loads((Path(path) / STATE_FILE).read_text())


def check_run_settings(path: Path, saved: dict | None, current: dict[str, int]) -> None:
    """Refuse to resume a checkpoint written with another world size, per-process batch size
    or accumulation: the fast-forward (steps x accumulation x processes batches) and every
    later step would cover other data than the interrupted run's."""
    if saved is None:
        raise CheckpointMismatch(f"checkpoint {path} does not record the world size, batch size "
                                 "and accumulation it was written with; delete it to start afresh")
    for key, template in RUN_SETTINGS.items():
        if saved.get(key) != current[key]:
            raise CheckpointMismatch(
                f"checkpoint {path} {template.format(saved.get(key), current[key])}: resuming "
                "would replay or skip batches; rerun with the checkpoint's settings, or delete "
                f"{Path(path).parent} to start afresh")


def check_rng_restored(path: Path, process_index: int) -> None:
    """Raise unless this process's RNG state is the one checkpoint `path` saved for it.
    `accelerate load_state` swallows any failure to restore RNG states (an INFO log line),
    which would let a resumed run draw other dropout masks and shuffles unnoticed; the file
    is read again here, as there, with `weights_only=True`."""
    import torch
    from accelerate.utils import load

    saved = load(Path(path) / f"random_states_{process_index}.pkl")
    if not torch.equal(saved["torch_manual_seed"], torch.get_rng_state()):
        raise RuntimeError(f"the RNG state of process {process_index} was not restored from "
                           f"checkpoint {path}")


def scheduler_state(scheduler) -> dict:
    """A LambdaLR's position as plain numbers (its lambda is rebuilt from the settings)."""
    full = scheduler.state_dict()
    return {k: full[k] for k in SCHEDULER_KEYS}


def restore_scheduler(scheduler, state: dict) -> None:
    scheduler.load_state_dict({**{k: state[k] for k in SCHEDULER_KEYS},
                               "lr_lambdas": [None] * len(scheduler.lr_lambdas)})


# ---- one run per directory ---------------------------------------------------------------


class CheckpointLock:
    """An exclusive flock on `<dir>.lock`, held while a run owns checkpoint directory `dir`.

    Fails fast (`CheckpointInUse`, naming the holder's pid, host and start) rather than
    waiting: a second run of the same stage is a duplicate submission, and waiting would
    only train the stage twice. The lock file sits beside the directory, so deleting the
    checkpoints never deletes the lock; it is removed on release (a run that locked a file
    that was removed meanwhile retries on the new one)."""

    def __init__(self, directory: Path):
        self.path = Path(str(directory) + ".lock")
        self.fd: int | None = None

    def __enter__(self) -> CheckpointLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
                os.close(fd)
                raise CheckpointInUse(_in_use_message(self.path, holder)) from None
            if _same_file(fd, self.path):
                self.fd = fd
            else:
                os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: latecomers see the new file
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _in_use_message(path: Path, holder: str) -> str:
    try:
        h = json.loads(holder)
    except ValueError:
        h = {}
    who = (f"pid {h.get('pid', '?')} on {h.get('host', '?')}, since {h.get('since', '?')}"
           if h else "a process that is starting")
    return (f"checkpoint directory {str(path)[:-len('.lock')]} is in use by another run of this "
            f"stage ({who}; lock {path}): wait for it to finish or stop it; two runs would "
            "overwrite each other's checkpoints")
