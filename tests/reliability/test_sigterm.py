"""Stopping by SIGTERM (what Docker, Kubernetes and process supervisors send) or SIGINT: the
command's workers stop, its MLflow runs end KILLED, one line says what is kept, it exits
128 + the signal within 30 s, and nothing of its process group (nor any process of its
VLMFORGE_HOME, Prefect's temporary server included) is left.

Real processes and real signals: each command runs in a process group of its own and the
signal goes to its main process only, as `docker stop` and the kubelet send it (or to the
whole group, as a terminal's Ctrl-C or `kill -- -PGID` does).

- fast: `stop_worker.py`, a stoppable command with an MLflow run and a worker tree (a child
  running a process pool), in three shapes: our handler raises, the command owns SIGTERM as
  Prefect's engine does in a flow run (and kills its direct child, orphaning the pool), or
  the command swallows the stop (the watchdog ends it).
- slow: `vlmforge run --recipe configs/micro.yaml` stopped during the data stage, a training
  stage and evaluation, then a rerun that completes and reuses what was done.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("stop_worker.py")
EXIT_LIMIT_S = 30.0
START_TIMEOUT_S = 900.0  # a busy 2-core machine: imports and Prefect's server take minutes


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[2]), fields[0]  # (process group, state)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[0] == pgid and st[1] != "Z":
            out.append(int(entry.name))
    return out


def home_processes(home: Path) -> list[int]:
    """Live processes whose environment holds VLMFORGE_HOME=``home``, whatever their group
    (Prefect's temporary server, a worker that left the group)."""
    needle = f"VLMFORGE_HOME={home}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                st = _stat(int(entry.name))
                if st and st[1] != "Z":
                    out.append(int(entry.name))
        except OSError:
            continue
    return out


def run_statuses(home: Path) -> list[tuple[str, str]]:
    """(name, status) of every MLflow run of the home's tracking store, oldest first."""
    with sqlite3.connect(home / "mlflow.db") as db:
        return db.execute("SELECT name, status FROM runs ORDER BY start_time").fetchall()


def prefect_states(home: Path) -> list[tuple[str, str]]:
    """(kind, state type) of every Prefect flow and task run of the home's embedded server."""
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        return ([("flow", s) for (s,) in db.execute("SELECT state_type FROM flow_run")]
                + [("task", s) for (s,) in db.execute("SELECT state_type FROM task_run")])


class Command:
    """A command in a process group of its own, its output collected as it comes."""

    def __init__(self, argv: list[str], home: Path):
        # the test session's Prefect settings (PREFECT_HOME under its own home, WARNING logs)
        # stay out: the command's Prefect lives in its home and logs the flows it begins
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_CONTEXT"))}
        env.update(VLMFORGE_HOME=str(home), PYTHONUNBUFFERED="1", PREFECT_LOGGING_LEVEL="INFO")
        self.home = home
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not re.search(pattern, self.output, re.MULTILINE):
                assert self.proc.poll() is None, f"exited {self.proc.returncode} before {pattern!r}:\n" \
                                                 f"{self.output[-4000:]}"
                assert time.monotonic() < deadline, f"no {pattern!r} in time:\n{self.output[-4000:]}"
                self._seen.wait(1.0)

    def stop(self, sig: int = signal.SIGTERM, whole_group: bool = False) -> tuple[int, float]:
        """Send ``sig`` (to the main process, or to the group) and time the exit."""
        start = time.monotonic()
        if whole_group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=EXIT_LIMIT_S + 30)
        finally:
            seconds = time.monotonic() - start
        return rc, seconds

    def leftovers(self) -> list[int]:
        """What is still alive of the group or of the home, a second after the exit."""
        time.sleep(1.0)
        return sorted(set(group_members(self.proc.pid)) | set(home_processes(self.home)))

    def kill(self) -> None:
        """Never leave anything behind a failed assertion."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in [*group_members(self.proc.pid), *home_processes(self.home)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()


def assert_stopped(cmd: Command, rc: int, seconds: float, sig: int = signal.SIGTERM) -> str:
    """Exit status 128 + sig within the limit, nothing left, one stop line; returns the line."""
    out = cmd.output
    assert rc == 128 + sig, f"exit {rc}:\n{out[-4000:]}"
    assert seconds < EXIT_LIMIT_S, f"took {seconds:.1f}s:\n{out[-4000:]}"
    assert cmd.leftovers() == [], out[-4000:]
    lines = [line for line in out.splitlines() if f"stopped by {signal.Signals(sig).name} during" in line]
    assert len(lines) == 1, out[-4000:]
    assert lines[0].endswith("a rerun resumes from there"), lines[0]
    return lines[0]


# ---- fast: the stop of one command ---------------------------------------------------------

@pytest.mark.parametrize(("mode", "sig", "whole_group"), [
    ("engine", signal.SIGTERM, False),  # the command owns SIGTERM, as Prefect in a flow run
    ("plain", signal.SIGINT, True),     # Ctrl-C: the terminal signals the whole group
    pytest.param("stuck", signal.SIGTERM, False,  # the command ignores the stop: the watchdog
                 marks=pytest.mark.slow),           # ends it (~30 s)
    pytest.param("plain", signal.SIGTERM, False, marks=pytest.mark.slow),
    pytest.param("engine", signal.SIGTERM, True, marks=pytest.mark.slow),  # systemd: every process
])
def test_a_stopped_command_stops_its_workers_and_ends_its_runs_killed(tmp_path, mode, sig, whole_group):
    home = tmp_path / "home"
    cmd = Command([sys.executable, str(WORKER), mode], home)
    try:
        cmd.wait_for(r"^ready \d+")
        deadline = time.monotonic() + 60
        while len(group_members(cmd.proc.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)  # the command, its child and the child's 2 pool processes
        assert len(group_members(cmd.proc.pid)) >= 4, cmd.output
        rc, seconds = cmd.stop(sig, whole_group)
        line = assert_stopped(cmd, rc, seconds, sig)
        assert "during stage-under-test" in line and "killed runs: stage-under-test" in line, line
        assert run_statuses(home) == [("stage-under-test", "KILLED")]
    finally:
        cmd.kill()


# ---- slow: the pipeline stopped in each phase, then rerun ------------------------------------

def _run(home: Path) -> Command:
    return Command([sys.executable, "-m", "flows.cli", "run", "--recipe", "configs/micro.yaml"], home)


def _wait_for_training(home: Path, run_name: str, timeout: float = START_TIMEOUT_S) -> None:
    """Poll the tracking store until MLflow run ``run_name`` is RUNNING and has logged a
    training step."""
    query = ("SELECT 1 FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
             "WHERE r.name = ? AND r.status = 'RUNNING' LIMIT 1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):  # no store yet, or locked
            with sqlite3.connect(home / "mlflow.db") as db:
                if db.execute(query, (run_name,)).fetchone():
                    return
        time.sleep(0.05)
    raise AssertionError(f"MLflow run {run_name!r} logged no training step in time")


def _stop_during(home: Path, flow: str, after_s: float = 0.0, inside_run: str | None = None
                 ) -> tuple[str, float]:
    """Start the micro pipeline, SIGTERM its main process ``after_s`` seconds into sub-flow
    ``flow`` (or, with ``inside_run``, as soon as that MLflow run has logged a training step:
    a micro stage can end within seconds on a fast machine), check the stop; returns the stop
    line and the exit time."""
    cmd = _run(home)
    try:
        cmd.wait_for(rf"Beginning subflow run .* for flow '{flow}'")
        if inside_run:
            _wait_for_training(home, inside_run)
        else:
            time.sleep(after_s)
        assert cmd.proc.poll() is None, cmd.output[-4000:]
        rc, seconds = cmd.stop()
        when = f"in run {inside_run}" if inside_run else f"{after_s:.0f}s into {flow}"
        print(f"SIGTERM {when}: exit {rc} after {seconds:.1f}s")  # (-s shows it)
        line = assert_stopped(cmd, rc, seconds)
        statuses = run_statuses(home)
        assert "RUNNING" not in {s for _, s in statuses}, statuses
        assert ("pipeline-micro", "KILLED") == [r for r in statuses if r[0] == "pipeline-micro"][-1]
        states = prefect_states(home)
        assert not [s for s in states if s[1] in ("RUNNING", "PENDING")], states
        assert ("flow", "CRASHED") in states or ("flow", "CANCELLED") in states
        return line, seconds
    finally:
        cmd.kill()


@pytest.mark.slow
def test_sigterm_during_data_training_and_evaluation_then_a_rerun_reuses_the_rest(tmp_path):
    home = tmp_path / "home"
    line, _ = _stop_during(home, "data", 6.0)  # DVC is generating the sources
    assert "during data" in line

    line, _ = _stop_during(home, "pretrain", inside_run="pretrain-32px")  # inside the first stage
    assert "during pretrain" in line and "kept data version" in line and "backbones" in line, line
    assert [n for n, s in run_statuses(home) if s == "KILLED"][-1] == "pretrain-32px"

    line, _ = _stop_during(home, "evaluate", 2.0)
    assert "during evaluate" in line and "stages pretrain-32px..align" in line, line

    cmd = _run(home)
    try:
        assert cmd.proc.wait(timeout=START_TIMEOUT_S) == 0, cmd.output[-4000:]
    finally:
        cmd.kill()
    summary = cmd.output[cmd.output.index("vlmforge run: vlm-micro"):]
    for stage in ("backbone vision-micro", "backbone lm-micro", "pretrain-32px", "pretrain-64px",
                  "sft", "align"):
        row = next(r for r in summary.splitlines() if r.startswith(stage))
        assert " cached " in row, row  # trained by the stopped runs, reused here
    assert "RUNNING" not in {s for _, s in run_statuses(home)}
