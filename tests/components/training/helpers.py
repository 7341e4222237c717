"""Running the probes under the launcher and watching which sockets the launched processes listen on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("ddp_probe.py")


def launched_env() -> dict[str, str]:
    """Our environment, the project importable, no inherited rank, one thread a process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _descendants(pid: int) -> set[int]:
    """pid and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def _listening(pids: set[int]) -> set[str]:
    """Local addresses of listening TCP sockets owned by `pids` (from `ss -ltnpH`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids:
            found.add(line.split()[3])
    return found


def run(cmd: list[str], watch: bool) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `cmd` in the project root; with `watch` (and `ss` installed), also the local
    addresses its process tree listened on while it ran."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=launched_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    addresses: set[str] = set()
    if watch and shutil.which("ss"):
        while proc.poll() is None:
            addresses |= _listening(_descendants(proc.pid))
            time.sleep(0.2)
    output, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, output), addresses
