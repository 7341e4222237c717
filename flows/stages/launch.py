"""Multi-process training: `accelerate launch` as a subprocess of a Prefect task.

`accelerate_launch` (task) runs `python -m components.training.distributed` (accelerate
launch with a loopback-only rendezvous on one machine) on N processes, streams the
children's stdout and stderr lines into the task's log, and fails on a non-zero exit.

`python -m flows.stages.launch stage --recipe R --kind pretrain|sft|align [--force]` is what
every rank runs. Rank detection: torchrun (under accelerate launch) exports RANK (global),
LOCAL_RANK and WORLD_SIZE to each worker; `accelerate.PartialState().process_index`
reads the same variables once the process group is up. Before training starts there is
no process group yet, so the environment variables decide: RANK 0 (or no RANK at all)
runs the normal stage flow (MLflow run, metrics, evaluation, registration, Prefect
subflow reporting to the parent's Prefect server); every other rank builds the same
model, joins the same `train()` (its on_log is never called: the loop logs on the main
process only) and writes nothing to MLflow or Prefect.

`StageLauncher` runs the pipeline's training stages this way (`vlmforge run --launcher
accelerate`): each kind gets the version its first stage starts from (`--previous-version`,
followers included) and rank 0 writes the stages' outcomes to a file the pipeline reads back
(`--outcomes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task

from components.recipe import STAGE_KINDS
from components.training.distributed import is_main_process, launch_command, process_rank
from flows.environment import PROJECT_ROOT

if TYPE_CHECKING:
    from flows.stages.training import StageOutcome

WORKER_MODULE = "flows.stages.launch"


class LaunchError(RuntimeError):
    """The launched processes exited non-zero; the message carries the output's tail."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment: ours, the project importable, the parent's servers.

    MLFLOW_TRACKING_URI and VLMFORGE_HOME pass through as they are (`registry.configure`
    exports the URI), so every rank uses the parent's tracking store. An embedded
    (ephemeral) Prefect server is made explicit with PREFECT_API_URL, so rank 0's flow run
    reports to the same server instead of starting its own.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a launcher inside a launched process must not inherit its rank
    if "PREFECT_API_URL" not in env:
        url = _prefect_api_url()
        if url:
            env["PREFECT_API_URL"] = url
    env.update(extra or {})
    return env


def _prefect_api_url() -> str | None:
    """The API of the Prefect server this run talks to (the embedded one included), or None
    outside a flow/task run (asking then would start an embedded server)."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    from prefect.client.orchestration import get_client

    return str(get_client(sync_client=True).api_url).rstrip("/") or None


def _pump(stream, sink, tail: deque, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        line = line.rstrip("\n")
        tail.append(prefix + line)
        sink(prefix + line)
    stream.close()


def run_streaming(cmd: list[str], log, env: dict[str, str] | None = None,
                  cwd: str | Path = PROJECT_ROOT, tail_lines: int = 40) -> int:
    """Run `cmd`, passing each stdout/stderr line to `log` as it comes; raise LaunchError on failure."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    tail: deque[str] = deque(maxlen=tail_lines)
    lock = threading.Lock()

    def sink(line: str) -> None:
        with lock:
            log(line)

    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sink, tail, ""), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, sink, tail, "[stderr] "), daemon=True)]
    for t in pumps:
        t.start()
    rc = proc.wait()
    for t in pumps:
        t.join()
    if rc:
        raise LaunchError(f"`{' '.join(cmd)}` exited with {rc}; last lines:\n" + "\n".join(tail))
    return rc


@task(name="accelerate-launch")
def accelerate_launch(target: list[str], num_processes: int, config_file: str | None = None,
                      env: dict[str, str] | None = None) -> int:
    """`accelerate launch` `target` on `num_processes` processes; its output goes to this log."""
    logger = get_run_logger()
    cmd = launch_command(list(target), num_processes, config_file)
    logger.info("launching: %s", " ".join(cmd))
    start = time.perf_counter()
    run_streaming(cmd, logger.info, child_env(env))
    logger.info("%d processes finished in %.0fs", num_processes, time.perf_counter() - start)
    return 0


def stage_target(recipe: str, kind: str, force: bool = False,
                 parent_run_id: str | None = None, wait_s: float | None = None,
                 previous_version: str | None = None, outcomes: Path | None = None) -> list[str]:
    """What every launched process runs for one stage kind of a recipe."""
    target = ["-m", WORKER_MODULE, "stage", "--recipe", str(recipe), "--kind", kind]
    if force:
        target.append("--force")
    for flag, value in (("--parent-run-id", parent_run_id), ("--wait-s", wait_s),
                        ("--previous-version", previous_version), ("--outcomes", outcomes)):
        if value is not None:
            target += [flag, str(value)]
    return target


def launch_stage(recipe_path: str, kind: str, num_processes: int, config_file: str | None = None,
                 force: bool = False, wait_s: float | None = None) -> int:
    """The `vlmforge pretrain|sft|align --launcher accelerate` path: a flow around the launch task.
    ``wait_s``: how long a follower rank waits for rank 0's registration (default an hour)."""
    recipe_path = str(Path(recipe_path).resolve())  # the children run in the project root
    config_file = str(Path(config_file).resolve()) if config_file else None

    @flow(name=f"{kind}-launch")
    def launched() -> int:
        return accelerate_launch(stage_target(recipe_path, kind, force, wait_s=wait_s),
                                 num_processes, config_file)

    return launched()


@dataclass(frozen=True)
class StageLauncher:
    """The pipeline's training stages under `vlmforge run --launcher accelerate`: each stage
    kind of the recipe at `recipe_path` on `num_processes` launched processes."""

    recipe_path: str
    num_processes: int
    config_file: str | None = None
    wait_s: float | None = None

    def run(self, kind: str, parent_run_id: str, force: bool,
            previous_version: str | None) -> list[StageOutcome]:
        """Every `kind` stage, launched from the pipeline's flow; rank 0's outcomes."""
        from flows.stages.training import StageOutcome

        config_file = str(Path(self.config_file).resolve()) if self.config_file else None
        with tempfile.TemporaryDirectory() as tmp:
            outcomes = Path(tmp) / "outcomes.json"
            accelerate_launch(stage_target(str(Path(self.recipe_path).resolve()), kind, force,
                                           parent_run_id, self.wait_s, previous_version, outcomes),
                              self.num_processes, config_file)
            return [StageOutcome(**o) for o in json.loads(outcomes.read_text())]


# ---- what each launched process runs -------------------------------------------------


def follower_stage(recipe, stage, data, backbones, force: bool, wait_s: float,
                   previous_version: str | None = None) -> str:
    """A non-zero rank: the same model and the same `train()` as rank 0, nothing logged.
    Returns the stage's version (rank 0's), the next stage's parent."""
    import registry
    from components.recipe import stage_cache_key
    from components.training.stage import run_stage
    from flows.stages.training import parent_of, reference_file, start_model

    if previous_version is not None and recipe.previous_stage(stage) is not None:
        parent = previous_version  # as rank 0's train_stage decides
    else:
        parent = _retry(lambda: parent_of(recipe, stage, data, backbones), wait_s)
    key = stage_cache_key(recipe, stage, parent, data.version)  # the key rank 0 tags
    before = registry.find_version(recipe.registered_model, {"cache_key": key})
    if not force and before is not None:
        return before  # rank 0 reuses the cached version too
    model, processor, _ = start_model(recipe, stage, parent, data, backbones)
    run_stage(model, processor, stage, data.shards, seed=recipe.seed,
              max_length=recipe.model.max_length,
              reference_file=reference_file(recipe, stage, parent, data))
    # the next stage starts from the version rank 0 registers now: wait for it
    return _retry(lambda: _newer(recipe.registered_model, key, before), wait_s)


def _newer(name: str, key: str, before: str | None) -> str:
    import registry

    version = registry.find_version(name, {"cache_key": key})
    if version is None or (before is not None and int(version) <= int(before)):
        raise LookupError(f"no new version of {name} with cache key {key} yet")
    return version


def _retry(fn, wait_s: float, every: float = 2.0):
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return fn()
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(every)


def stage_main(args: argparse.Namespace) -> int:
    from flows.environment import configure_stores

    configure_stores()
    from components.recipe import load_recipe
    from flows.stages.backbones import registered_backbones
    from flows.stages.data import current_data

    recipe = load_recipe(args.recipe)
    data = current_data(recipe)
    backbones = registered_backbones(recipe, data)
    if is_main_process():
        from flows.stages.training import STAGE_FLOWS

        outcomes = STAGE_FLOWS[args.kind](recipe, data, backbones, parent_run_id=args.parent_run_id,
                                          force=args.force, previous_version=args.previous_version)
        for s in outcomes:
            print(f"{s.stage}: {recipe.registered_model} v{s.version}"
                  f"{' (cached)' if s.cached else ''} run {s.run_id}", flush=True)
        if args.outcomes:
            Path(args.outcomes).write_text(json.dumps([dataclasses.asdict(s) for s in outcomes]))
        return 0
    stages = recipe.stages_of(args.kind)
    previous = args.previous_version
    for stage in stages:
        previous = follower_stage(recipe, stage, data, backbones, args.force, args.wait_s, previous)
    print(f"rank {process_rank()}: {len(stages)} {args.kind} stage(s) done", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.stages.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="one rank of a launched pretrain/sft/align run")
    st.add_argument("--recipe", required=True)
    st.add_argument("--kind", required=True, choices=STAGE_KINDS)
    st.add_argument("--force", action="store_true")
    st.add_argument("--parent-run-id", default=None)
    st.add_argument("--wait-s", type=float, default=3600.0,
                    help="how long a non-zero rank waits for rank 0's registration")
    st.add_argument("--previous-version", default=None,
                    help="the version the kind's first stage starts from (inside a pipeline)")
    st.add_argument("--outcomes", default=None, help="rank 0 writes the stages' outcomes here (JSON)")
    st.set_defaults(func=stage_main)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
