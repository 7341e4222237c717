"""Independent jobs side by side: results in order, the caller's context in every job, torch's
threads split between the jobs and restored after."""

from __future__ import annotations

import contextvars
import threading

import torch

from flows.concurrency import map_in_threads

RUN = contextvars.ContextVar("RUN", default=None)


def test_jobs_run_side_by_side_in_the_callers_context_with_a_share_of_the_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    RUN.set("pipeline-run")
    both_started = threading.Barrier(2, timeout=10)  # deadlocks unless two jobs run at once

    def job(x: int) -> tuple[int, str | None, int]:
        both_started.wait()
        return x * x, RUN.get(), torch.get_num_threads()

    try:
        assert map_in_threads(job, [3, 4]) == [(9, "pipeline-run", 1), (16, "pipeline-run", 1)]
        assert torch.get_num_threads() == 2
        assert map_in_threads(lambda x: x + 1, [1], workers=2) == [2]  # one job: inline
    finally:
        torch.set_num_threads(before)
