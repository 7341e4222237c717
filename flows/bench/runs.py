"""Whole-command measurements: `vlmforge --help` start-up against bare Python, a pipeline
process's imports compiled against cached, and a second `vlmforge run` of an unchanged recipe
against the first."""

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


# what a pipeline process imports before its first stage (the training stages' model included)
PIPELINE_IMPORTS = ("import torch, transformers, prefect, mlflow, great_expectations, "
                    "flows.pipeline, transformers.models.idefics3.modeling_idefics3")


def bytecode_envs(cache: str, empty: str) -> tuple[dict, dict]:
    """Environments of a process that compiles every module it imports (reads an empty
    bytecode folder, writes nothing) and of one that reads and writes ``cache``."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return (dict(base, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=empty),
            dict(base, PYTHONPYCACHEPREFIX=cache))


def bench_bytecode(repeats: int = 3, imports: str = PIPELINE_IMPORTS) -> dict:
    """Seconds of a fresh process running ``imports`` that compiles every module (as after
    `pip install --no-compile` under PYTHONDONTWRITEBYTECODE) against one that reads the
    bytecode an earlier process cached; alternated, medians (ratio = compiled / cached)."""
    cmd = [sys.executable, "-c", imports]
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-pyc-") as cache, \
            tempfile.TemporaryDirectory(prefix="vlmforge-bench-nopyc-") as empty:
        compiling, cached = bytecode_envs(cache, empty)
        _timed(cmd, cached)  # writes the bytecode
        runs: dict[str, list[float]] = {"compiled": [], "cached": []}
        for _ in range(repeats):
            runs["compiled"].append(_timed(cmd, compiling))
            runs["cached"].append(_timed(cmd, cached))
    compiled_s, cached_s = (statistics.median(runs[k]) for k in ("compiled", "cached"))
    return {"compiled_seconds": round(compiled_s, 2), "cached_seconds": round(cached_s, 2),
            "ratio": round(compiled_s / cached_s, 2), "repeats": repeats}


def bench_rerun(recipe: str) -> dict:
    exe = str(Path(sys.executable).parent / "vlmforge")
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-") as home:
        env = dict(os.environ, VLMFORGE_HOME=home)
        env.pop("MLFLOW_TRACKING_URI", None)
        first = _timed([exe, "run", "--recipe", recipe], env)
        second = _timed([exe, "run", "--recipe", recipe], env)
    return {"recipe": recipe, "first_seconds": round(first, 1), "second_seconds": round(second, 1),
            "ratio": round(second / first, 3)}
