"""Stopping a command by SIGTERM or SIGINT: its workers stop, its runs end KILLED, one line says
what is kept, and it exits 128 + the signal's number within STOP_DEADLINE_S.

Docker, Kubernetes and most process supervisors send SIGTERM to the main process only (PID 1
of a container); Ctrl-C sends SIGINT to the terminal's whole process group; systemd signals
every process of the unit. `run_stoppable` wraps a command (`vlmforge run` and every stage
command, flows/cli.py) so that in every case:

1. The workers stop: every process below this one (DVC and the stage commands it runs, data
   generation pools, accelerate-launched ranks, Dask workers) gets SIGTERM at once and
   SIGKILL after WORKER_GRACE_S (a launched rank that checkpoints on SIGTERM has that long).
   This process is a child subreaper (Linux), so a worker whose parent died first (DVC
   killed by `subprocess.run`) is re-parented here and still found. Prefect's temporary
   server is left running so that the flow engine can report the runs.
2. Inside a flow run Prefect's engine turns SIGTERM into `TerminationSignal` and marks the
   flow and task runs Crashed, then re-delivers the signal to the handler installed here,
   which raises `Stopped` (a KeyboardInterrupt, so everything that cleans up on Ctrl-C does
   so here too; the training loop's own SIGTERM checkpoint raises `TrainingInterrupted`). The
   MLflow runs of this invocation (tag `vlmforge.invocation`, set through
   MLFLOW_RUN_CONTEXT, so launched ranks carry it too) that are left RUNNING or ended FAILED
   after the signal end KILLED.
3. One line on stderr: the signal, the phase, what a rerun reuses (the command's ``kept``).
4. The exit runs atexit as usual, which stops Prefect's temporary server.

A watchdog thread learns of the signal through `signal.set_wakeup_fd` (it sees every signal
whichever Python handler is installed: Prefect replaces ours inside flow runs) and bounds
the stop: when the main thread has not finished by STOP_DEADLINE_S, or soon after Prefect's
temporary server died too (a signal to the whole group or unit: Prefect's client would then
retry for minutes), it does the same cleanup itself, kills what is left below this process,
Prefect's server included, and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

INVOCATION_TAG = "vlmforge.invocation"  # on every MLflow run a command (and its ranks) starts
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# seconds after the signal by which each part of the stop is done
WORKER_GRACE_S = 10.0  # SIGTERM -> SIGKILL for the processes below this one
RUNS_BY_S = 20.0  # the MLflow runs marked
DESCRIBE_BY_S = 23.0  # what is kept found out
STOP_DEADLINE_S = 24.0  # the watchdog takes over (then at most ~4 s to exit)
SERVER_GONE_S = 5.0  # ... or this long after Prefect's temporary server died too
PREFECT_SERVER_MARK = "prefect.server.api.server:create_app"  # its uvicorn command line
PR_SET_CHILD_SUBREAPER = 36

Describe = Callable[[str, list[str]], str]  # (phase, killed MLflow run names) -> what is kept


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: the command stops (cleanup as on Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_phase = ["starting"]


def note_phase(phase: str) -> None:
    """What the command is doing now (a stage flow's name), for the stop's line."""
    _phase[0] = phase


def current_phase() -> str:
    return _phase[0]


# ---- processes below this one ------------------------------------------------------------

def _stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), fields[0]


def descendants(root: int | None = None) -> list[int]:
    """Live (not zombie) processes below ``root`` (default: this one), parents first."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and (st := _stat(entry)) and st[1] != "Z":
            children.setdefault(st[0], []).append(int(entry))
    out, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            out.append(child)
            queue.append(child)
    return out


def is_prefect_server(pid: int) -> bool:
    """Whether ``pid`` is Prefect's temporary API server (uvicorn of create_app)."""
    try:
        return PREFECT_SERVER_MARK in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    st = _stat(str(pid))
    return st is not None and st[1] != "Z"


def stop_processes(pids: list[int], grace: float) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL what is left."""
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)


def workers() -> list[int]:
    """The processes below this one except Prefect's temporary server."""
    return [p for p in descendants() if not is_prefect_server(p)]


def _subreaper(on: bool) -> None:
    """Become (or stop being) the parent of orphaned descendants (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


# ---- MLflow runs of this invocation ------------------------------------------------------

@contextlib.contextmanager
def tagged_runs(invocation: str) -> Iterator[None]:
    """Every MLflow run started meanwhile, here or in a child process, carries the tag
    ``vlmforge.invocation = invocation`` (MLflow's MLFLOW_RUN_CONTEXT run-context tags)."""
    previous = os.environ.get("MLFLOW_RUN_CONTEXT")
    try:
        tags = json.loads(previous) if previous else {}
    except ValueError:
        tags = {}
    os.environ["MLFLOW_RUN_CONTEXT"] = json.dumps({**tags, INVOCATION_TAG: invocation})
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_RUN_CONTEXT", None)
        else:
            os.environ["MLFLOW_RUN_CONTEXT"] = previous


def _end_runs_killed(invocation: str, since: float) -> list[str]:
    from registry.tracking import end_interrupted_runs

    return end_interrupted_runs(INVOCATION_TAG, invocation, since)


def _bounded(fn: Callable[[], object], timeout: float, default: object) -> object:
    """``fn()`` in a daemon thread, or ``default`` when it takes longer than ``timeout``."""
    box: list[object] = [default]

    def target() -> None:
        try:
            box[0] = fn()
        except Exception as exc:  # noqa: BLE001 - a failed cleanup step must not stop the rest
            box[0] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return box[0]


# ---- the stop ----------------------------------------------------------------------------

@dataclass
class StopState:
    """One command's stop: which signal, when, and who has done the cleanup."""

    command: str
    describe: Describe
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)
    signum: int | None = None
    at_wall: float = 0.0
    at: float = 0.0
    requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reported: bool = False

    def request(self, signum: int) -> None:
        """Note the first stop signal (any thread) and wake the watchdog."""
        with self.lock:
            if self.signum is not None:
                return
            self.signum, self.at_wall, self.at = signum, time.time(), time.monotonic()
        tracking = sys.modules.get("registry.tracking")  # not imported: no run was started
        if tracking is not None:
            tracking.close_runs(f"stopped by {signal.Signals(signum).name}")
        self.requested.set()

    def _left(self, by: float, least: float = 1.0) -> float:
        """Seconds until ``by`` seconds after the signal (at least ``least``)."""
        return max(least, self.at + by - time.monotonic())

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def report(self) -> int:
        """Wait for the workers (to the grace's end), end the runs KILLED, print the line."""
        stop_processes(workers(), self._left(WORKER_GRACE_S, 0.0))
        killed = _bounded(lambda: _end_runs_killed(self.invocation, self.at_wall),
                          self._left(RUNS_BY_S), [])
        names = killed if isinstance(killed, list) else []
        kept = _bounded(lambda: self.describe(current_phase(), names), self._left(DESCRIBE_BY_S),
                        "unknown (timed out)")
        with self.lock:
            if not self.reported:
                self.reported = True
                name = signal.Signals(self.signum or signal.SIGTERM).name
                print(f"vlmforge {self.command}: stopped by {name} during "
                      f"{where(current_phase(), names)}: kept {kept}; a rerun resumes from there"
                      + (f" (MLflow runs not marked: {killed})" if isinstance(killed, Exception) else ""),
                      file=sys.stderr, flush=True)
        return self.exit_code


def where(phase: str, killed: list[str]) -> str:
    """The phase, or the stage inside it whose MLflow run the stop ended."""
    inner = [n for n in killed if not n.startswith("pipeline-") and n != phase]
    return f"{phase} ({inner[-1]})" if inner and inner[-1] != phase else phase


class _Watchdog(threading.Thread):
    """Reads the wakeup pipe; on the first stop signal stops the workers and bounds the stop."""

    def __init__(self, state: StopState, read_fd: int):
        super().__init__(name="vlmforge-stop-watchdog", daemon=True)
        self.state, self.read_fd = state, read_fd

    def run(self) -> None:
        threading.Thread(target=self._on_request, daemon=True).start()
        try:
            while data := os.read(self.read_fd, 64):  # b"": the command closed the pipe
                for signum in data:
                    if signum in SIGNALS:
                        self.state.request(signum)
        finally:
            os.close(self.read_fd)  # this thread owns the read end: no read on a reused fd

    def _on_request(self) -> None:
        state = self.state
        state.requested.wait()  # also set when the command ends without a stop
        if state.finished.is_set():
            return
        servers = [p for p in descendants() if is_prefect_server(p)]
        _signal_all(workers(), signal.SIGTERM)
        killed_at = time.monotonic() + WORKER_GRACE_S
        while not state.finished.wait(0.25):
            now = time.monotonic()
            if now >= killed_at:
                _signal_all(workers(), signal.SIGKILL)
                killed_at = float("inf")
            server_gone = servers and not any(_alive(p) for p in servers)
            if now - state.at >= STOP_DEADLINE_S or (server_gone and now - state.at >= SERVER_GONE_S):
                self._take_over()
                return

    def _take_over(self) -> None:
        """The main thread is stuck: report, stop everything below, exit now."""
        code = self.state.report()
        stop_processes(descendants(), 3.0)  # Prefect's temporary server included
        # a run a stuck thread opened after the report (before close_runs took effect)
        _bounded(lambda: _end_runs_killed(self.state.invocation, self.state.at_wall), 2.0, [])
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_stoppable(command: str, run: Callable[[], int], describe: Describe) -> int:
    """``run()`` with the stop of the module docstring; returns its status, or 128 + the
    signal when a stop signal ended it. Outside the main thread it only runs ``run()``."""
    if threading.current_thread() is not threading.main_thread():
        return run()
    state = StopState(command, describe)
    note_phase(command)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    raised = []

    def on_signal(signum, frame) -> None:
        """The first stop signal this handler sees stops the command (the watchdog may have
        noted it already: it reads the wakeup pipe, which is written before this runs)."""
        state.request(signum)
        if not raised:
            raised.append(signum)
            raise Stopped(signum)

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _subreaper(True)
    _Watchdog(state, read_fd).start()
    try:
        with tagged_runs(state.invocation):
            return run()
    except BaseException:
        if state.signum is None and not state.requested.wait(0.5):  # not a stop: an error
            raise
        for s in SIGNALS:  # a second signal must not cut the cleanup short
            signal.signal(s, lambda signum, frame: state.request(signum))
        return state.report()
    finally:
        state.finished.set()
        state.requested.set()  # the watchdog's waiting thread ends
        if state.signum is not None and "registry.tracking" in sys.modules:
            sys.modules["registry.tracking"].close_runs(None)  # this process may go on
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(write_fd)  # the watchdog reads EOF, closes its end and ends
        _subreaper(False)
        note_phase("starting")
