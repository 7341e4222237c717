"""Whole-command measurements: `vlmforge --help` start-up against bare Python, and a second
`vlmforge run` of an unchanged recipe against the first."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_startup(repeats: int = 5) -> dict:
    exe = str(Path(sys.executable).parent / "vlmforge")
    bare = [_timed([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    helps = [_timed([exe, "--help"]) for _ in range(repeats)]
    help_s, bare_s = statistics.median(helps), statistics.median(bare)
    return {"help_seconds": round(help_s, 3), "bare_python_seconds": round(bare_s, 3),
            "ratio": round(help_s / bare_s, 2)}


def bench_rerun(recipe: str) -> dict:
    exe = str(Path(sys.executable).parent / "vlmforge")
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-") as home:
        env = dict(os.environ, VLMFORGE_HOME=home)
        env.pop("MLFLOW_TRACKING_URI", None)
        first = _timed([exe, "run", "--recipe", recipe], env)
        second = _timed([exe, "run", "--recipe", recipe], env)
    return {"recipe": recipe, "first_seconds": round(first, 1), "second_seconds": round(second, 1),
            "ratio": round(second / first, 3)}
