"""`vlmforge ui`: both servers answer on 127.0.0.1 over a fresh embedded home, and Ctrl-C
(SIGINT) stops them and every process they started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.commands.ui import answers, free_port

READY_TIMEOUT_S = 300
EXIT_TIMEOUT_S = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and ") Z " not in Path(f"/proc/{pid}/stat").read_text()


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (the servers and what they started)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and _alive(int(entry.name)):
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return out


def test_ui_serves_mlflow_and_prefect_and_ctrl_c_stops_both(tmp_path):
    mlflow_port, prefect_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))}
    env.update(VLMFORGE_HOME=str(tmp_path / "home"), PREFECT_LOGGING_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--mlflow-port",
                             str(mlflow_port), "--prefect-port", str(prefect_port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    servers: dict[str, tuple[str, int]] = {}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            for line in list(lines):
                if m := re.match(r"(MLflow|Prefect):\s+(http://\S+)\s+\(pid (\d+)\)", line):
                    servers[m[1]] = (m[2], int(m[3]))
            if len(servers) == 2 and all(answers(url) for url, _ in servers.values()):
                break
            time.sleep(1)
        output = "".join(lines)[-3000:]
        assert servers == {"MLflow": (f"http://127.0.0.1:{mlflow_port}", servers["MLflow"][1]),
                           "Prefect": (f"http://127.0.0.1:{prefect_port}",
                                       servers["Prefect"][1])}, output
        assert all(answers(url) for url, _ in servers.values()), output
        assert answers(f"http://127.0.0.1:{prefect_port}/api/health")
        started = {pid: _group_members(pid) for _, pid in servers.values()}
        assert all(started.values())

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=EXIT_TIMEOUT_S) == 0, "".join(lines)[-3000:]
        for pid, members in started.items():
            assert not _alive(pid)
            assert not [m for m in members if _alive(m)], f"left running: {members}"
            assert not _group_members(pid)  # nor anything the servers started later
        assert not answers(f"http://127.0.0.1:{mlflow_port}")
        assert not answers(f"http://127.0.0.1:{prefect_port}/api/health")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for _, pid in servers.values():  # never leave a server behind a failed assertion
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
