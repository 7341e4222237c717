"""Checkpoints survive a host crash: read from the system calls of a real training process
(strace), every file of a checkpoint, its directory and the parent are fsynced before the
rename that makes it complete (and the parent after it); re-saving a step whose checkpoint
exists never passes through a moment where neither the old nor the new one is there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.training.checkpoints import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
TRAINER = Path(__file__).with_name("tiny_trainer.py")
CALLS = "fsync,fdatasync,rename,renameat,renameat2,unlinkat,rmdir"
pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")

_CALL = re.compile(r"^\d+\s+(?P<name>\w+)\((?P<args>.*?)(?:\)\s+=\s+(?P<rc>-?\d+).*| <unfinished \.\.\.>)$")
_FD = re.compile(r"^(?:-?\d+|AT_FDCWD)(?:<(?P<path>[^>]*)>)?$")


def _traced(tmp_path: Path, *args: str) -> list[tuple[str, list[str]]]:
    """Run tiny_trainer under strace; its successful path-level calls, in order, as
    (syscall, absolute paths)."""
    trace = tmp_path / "strace.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(["strace", "-f", "-y", "-qq", "-s", "4096", "-e", f"trace={CALLS}",
                           "-o", str(trace), sys.executable, str(TRAINER), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    calls = []
    for line in trace.read_text().splitlines():
        m = _CALL.match(line)
        if m and m["rc"] in (None, "0"):
            calls.append((m["name"], _paths(m["name"], _split(m["args"]))))
    return calls


def _split(args: str) -> list[str]:
    out, depth, cur, quoted = [], 0, "", False
    for ch in args:
        if ch == '"' and not cur.endswith("\\"):
            quoted = not quoted
        if not quoted and ch in "<[{":
            depth += 1
        elif not quoted and ch in ">]}":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def _paths(name: str, args: list[str]) -> list[str]:
    """The absolute paths a call names: fsync's fd, a rename's two, an unlink's one."""
    def at(dirfd: str, rel: str) -> str:
        rel = rel.strip('"')
        if rel.startswith("/"):
            return rel
        m = _FD.match(dirfd)
        return os.path.join(m["path"] if m and m["path"] else os.getcwd(), rel)

    if name in ("fsync", "fdatasync"):
        m = _FD.match(args[0])
        return [m["path"] if m and m["path"] else ""]
    if name == "rename":
        return [args[0].strip('"'), args[1].strip('"')]
    if name in ("renameat", "renameat2"):
        return [at(args[0], args[1]), at(args[2], args[3])]
    if name == "unlinkat":
        return [at(args[0], args[1])]
    return [args[0].strip('"')]  # rmdir


def _rename_index(calls, src: Path, dst: Path) -> int:
    for i, (name, paths) in enumerate(calls):
        if name.startswith("rename") and paths == [str(src), str(dst)]:
            return i
    raise AssertionError(f"no rename {src} -> {dst} in the trace")


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path):
    ckpt = tmp_path / "ck"
    calls = _traced(tmp_path, str(ckpt), str(tmp_path / "out"), "--steps", "2", "--every", "2")
    final = ckpt / "step-00000002"
    tmp = ckpt / "step-00000002.tmp"
    done = _rename_index(calls, tmp, final)
    before = {p for name, paths in calls[:done] if name in ("fsync", "fdatasync") for p in paths}
    files = sorted(p.relative_to(final) for p in final.rglob("*") if p.is_file())
    assert len(files) >= 5  # model, optimiser, RNG states, loop state, manifest
    missing = [str(f) for f in files if str(tmp / f) not in before]
    assert not missing, f"not fsynced before the rename: {missing}"
    assert str(tmp) in before, "the checkpoint directory was not fsynced before the rename"
    assert str(ckpt) in before, "the parent directory was not fsynced before the rename"
    after = {p for name, paths in calls[done + 1:] if name == "fsync" for p in paths}
    assert str(ckpt) in after, "the rename itself was not made durable (parent fsync)"


@pytest.mark.slow  # kills at every point of a re-save, ~17 s (make test-slow)
def test_resaving_an_existing_step_never_leaves_neither_checkpoint(tmp_path):
    """Step 4's checkpoint is corrupt, so the re-run resumes from step 2 and saves step 4
    again over the existing directory."""
    ckpt, out = tmp_path / "ck", tmp_path / "out"
    args = ["--steps", "4", "--every", "2"]
    first = subprocess.run([sys.executable, str(TRAINER), str(ckpt), str(out), *args], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(ckpt)] == [2, 4]
    (ckpt / "step-00000004" / "optimizer.bin").write_bytes(b"")
    calls = _traced(tmp_path, str(ckpt), str(out), *args)
    step4 = ckpt / "step-00000004"
    old = Path(f"{step4}.old")
    present = {step4}  # which of the two names exist, replayed from the trace
    for name, paths in calls:
        if name.startswith("rename"):
            src, dst = map(Path, paths)
            present.discard(src)
            if dst in (step4, old):
                present.add(dst)
        else:  # unlinkat / rmdir: a whole checkpoint directory goes
            present.discard(Path(paths[0]))
        assert present & {step4, old}, f"after {name}{paths}: neither {step4.name} nor {old.name}"
    assert present == {step4}
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000002", "step-00000004"]
