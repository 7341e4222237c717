"""A stoppable command for tests/reliability/test_sigterm.py, run as a process of its own:
`flows.stopping.run_stoppable` around a command that opens an MLflow run in $VLMFORGE_HOME,
starts a worker tree below it (a child running a 2-process pool, as DVC's stage command runs
the data generation pool) and waits.

    python stop_worker.py plain     # the stop handler of run_stoppable raises in the command
    python stop_worker.py engine    # the command owns SIGTERM, as Prefect's engine does in a
                                    # flow run: its handler SIGKILLs the child (as
                                    # subprocess.run kills DVC), orphaning the pool, and raises
    python stop_worker.py stuck     # the command swallows every stop: the watchdog must end it
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

# the test runs this file by path: the project root must be importable
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def pool_forever() -> None:
    """The child: a pool of 2 processes that never finish on their own."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(time.sleep, [3600, 3600])


class EngineTermination(BaseException):
    """What Prefect's engine raises on SIGTERM inside a flow run (`TerminationSignal`)."""


def command(mode: str) -> int:
    from flows.environment import configure_stores
    from flows.stopping import note_phase

    configure_stores()
    import registry

    child = subprocess.Popen([sys.executable, __file__, "pool"])
    if mode == "engine":
        def engine_handler(signum, frame):
            child.kill()  # the direct child dies first; its pool is orphaned
            raise EngineTermination(signum)
        signal.signal(signal.SIGTERM, engine_handler)
    elif mode == "stuck":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
    note_phase("stage-under-test")
    with registry.start_run("stage-under-test"):
        print(f"ready {child.pid}", flush=True)
        while True:
            time.sleep(0.2)


def main() -> int:
    mode = sys.argv[1]
    if mode == "pool":
        pool_forever()
        return 0
    from flows.stopping import run_stoppable

    return run_stoppable("stop-worker", lambda: command(mode),
                         lambda phase, killed: f"nothing (killed runs: {', '.join(killed) or 'none'})")


if __name__ == "__main__":
    sys.exit(main())
