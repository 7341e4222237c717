"""`vlmforge run` (the whole pipeline) and `vlmforge data|backbones|pretrain|sft|align` (one
stage alone, from what the earlier stages already produced). Only the standard library and
the light recipe vocabulary are imported at module level.

Each command runs the recipe's pre-flight first (components/recipe_checks.py: everything the
stages it runs name can be reached, the data fits the disk), before any heavy import, so a
run that cannot succeed fails in seconds. flows/cli.py runs these commands stoppable
(flows/stopping.py): SIGTERM or Ctrl-C stops their workers, ends their runs KILLED and
prints what `kept_after_stop` finds a rerun will reuse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from pathlib import Path

from components.recipe import STAGE_KINDS

# the stages each command runs, as the pre-flight names them (components.recipe_checks.DUE_STAGES)
DUE: dict[str, tuple[str, ...]] = {
    "run": ("data", "backbones", "training", "evaluate"),
    "data": ("data",),
    "backbones": ("data", "backbones"),
    **{kind: ("training",) for kind in STAGE_KINDS},
}


def open_recipe(path: str, due: Collection[str] = ()):
    """The offline environment, the validated recipe, its pre-flight for the stages ``due``
    (raises `PreflightError` naming everything missing), then the tracking store."""
    from flows.environment import configure_environment, configure_stores, data_workspace

    configure_environment()
    from components.recipe import load_recipe

    recipe = load_recipe(path)
    if due:
        from components.recipe_checks import preflight

        preflight(recipe, due=due, registered=is_registered, workspace=data_workspace(recipe.name))
    configure_stores()
    return recipe


def is_registered(name: str) -> bool:
    """Whether the model registry holds a version of ``name`` (opens the store on first use)."""
    from flows.environment import configure_stores

    configure_stores()
    import registry

    return registry.find_version(name, {}) is not None


def checked_recipe(args: argparse.Namespace):
    """The command's recipe after its pre-flight, or None (the reason printed) when it failed."""
    from components.recipe_checks import PreflightError

    try:
        return open_recipe(args.recipe, DUE[args.command])
    except PreflightError as exc:
        print(f"vlmforge {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return None


def upstream(recipe):
    """The data version and backbone versions the earlier stages produced for ``recipe``."""
    from flows.stages.backbones import registered_backbones
    from flows.stages.data import current_data

    data = current_data(recipe)
    return data, registered_backbones(recipe, data)


def cmd_run(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    if recipe is None:
        return 2
    from flows.environment import prestart_prefect_server

    server_started = prestart_prefect_server()  # while the pipeline's modules import
    from flows.pipeline import pipeline
    from flows.stages.launch import StageLauncher

    launcher = (StageLauncher(args.recipe, args.num_processes, args.accelerate_config)
                if args.launcher == "accelerate" else None)
    server_started()
    result = pipeline(recipe, force=args.force, launcher=launcher)
    print(result.summary(recipe.registered_model))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    if recipe is None:
        return 2
    from flows.stages.data import data_flow
    from flows.stopping import note_phase

    note_phase("data")
    data = data_flow(recipe)
    print(f"data version {data.version}: {data.counts}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    if recipe is None:
        return 2
    from flows.stages.backbones import backbones_flow
    from flows.stages.data import data_flow
    from flows.stopping import note_phase

    note_phase("data")
    data = data_flow(recipe)
    note_phase("backbones")
    for b in backbones_flow(recipe, data, force=args.force):
        print(f"{b.name} v{b.version}{' (cached)' if b.cached else ''} {b.metrics}")
    return 0


def cmd_training(args: argparse.Namespace) -> int:
    """`vlmforge <kind>`: every stage of that kind, inline or on N launched processes."""
    recipe = checked_recipe(args)
    if recipe is None:
        return 2
    try:
        data, backbones = upstream(recipe)  # fails fast when data or backbones are missing
    except LookupError as exc:
        print(f"vlmforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.launcher == "accelerate":
        from flows.stages.launch import launch_stage

        return launch_stage(args.recipe, args.command, args.num_processes,
                            args.accelerate_config, args.force)
    from flows.stages.training import STAGE_FLOWS

    for s in STAGE_FLOWS[args.command](recipe, data, backbones, force=args.force):
        print(f"{s.stage}: {recipe.registered_model} v{s.version}{' (cached)' if s.cached else ''} "
              f"run {s.run_id}")
    return 0


# ---- what a stop keeps -------------------------------------------------------------------
# Read from the data workspace and the registry with the cache keys the stages use, so it says
# exactly what a rerun reuses. Light imports only: a stop must report within seconds.

def kept_after_stop(args: argparse.Namespace, phase: str, killed: list[str]) -> str:
    """What a rerun of the command's recipe reuses: the finished DVC stages while the data
    stage ran, else the data version, the registered backbones and the cached stages."""
    from components.recipe import load_recipe
    from flows.environment import data_workspace

    recipe = load_recipe(args.recipe)
    workspace = data_workspace(recipe.name)
    if phase == "data" or not (workspace / "dvc.lock").exists():
        done = finished_dvc_stages(workspace)
        return f"DVC stages {', '.join(done)}" if done else "nothing yet"
    from components.data.version import read_version

    data = read_version(workspace)
    parts = [f"data version {data.version}"]
    backbones = registered_backbone_versions(recipe, data.version)
    if backbones is None:
        return parts[0] + " (backbones not trained yet)"
    if backbones:
        parts.append("backbones " + ", ".join(f"{n} v{v}" for n, v in backbones))
    stages = cached_stages(recipe, data.version, backbones)
    if stages:
        parts.append(f"stage {stages[0]}" if len(stages) == 1 else f"stages {stages[0]}..{stages[-1]}")
    return ", ".join(parts)


def finished_dvc_stages(workspace: Path) -> list[str]:
    """The DVC stages recorded in the workspace's dvc.lock (a rerun skips the unchanged ones)."""
    import yaml

    try:
        lock = yaml.safe_load((workspace / "dvc.lock").read_text()) or {}
    except OSError:
        return []
    return list(lock.get("stages", {}))


def registered_backbone_versions(recipe, data_version: str) -> list[tuple[str, str]] | None:
    """(name, version) of the recipe's trained backbones on this data ([] for hub backbones),
    None when one is missing; the same lookup as `flows.stages.backbones.registered_backbones`."""
    import registry
    from components.recipe import backbone_cache_key

    if recipe.backbones is None:
        return []
    found = []
    for spec in (recipe.backbones.vision, recipe.backbones.text):
        version = registry.find_version(spec.registered_model,
                                        {"cache_key": backbone_cache_key(recipe, spec, data_version)})
        if version is None:
            return None
        found.append((spec.registered_model, version))
    return found


def cached_stages(recipe, data_version: str, backbones: list[tuple[str, str]]) -> list[str]:
    """The recipe's stages, in order, whose version a rerun reuses (the chain of cache keys the
    pipeline follows: the first stage's parent names the backbones, each next one the version
    before it)."""
    import registry
    from components.recipe import stage_cache_key

    parent = "backbones:" + ",".join(f"{name}={version}" for name, version in backbones)
    done = []
    for stage in recipe.stages:
        version = registry.find_version(recipe.registered_model, {
            "cache_key": stage_cache_key(recipe, stage, parent, data_version)})
        if version is None:
            break
        done.append(stage.name)
        parent = version
    return done


def add_run_parsers(subparsers: argparse._SubParsersAction) -> None:
    """`run`, `data`, `backbones` and one command per stage kind (each stoppable: `kept`)."""
    run = subparsers.add_parser("run", help="the whole pipeline: data -> ... -> evaluate + promotion")
    run.add_argument("--recipe", required=True, help="recipe YAML, e.g. configs/tiny.yaml")
    run.add_argument("--force", action="store_true", help="retrain stages even when unchanged")
    add_launcher_options(run, "each training stage")
    run.set_defaults(func=cmd_run, kept=kept_after_stop)
    for name, func in (("data", cmd_data), ("backbones", cmd_backbones),
                       *((kind, cmd_training) for kind in STAGE_KINDS)):
        p = subparsers.add_parser(name, help=f"run the {name} stage alone")
        p.add_argument("--recipe", required=True)
        p.add_argument("--force", action="store_true")
        if name in STAGE_KINDS:
            add_launcher_options(p, "the stage")
        p.set_defaults(func=func, kept=kept_after_stop)


def add_launcher_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--launcher", choices=["inline", "accelerate"], default="inline",
                        help=f"accelerate: run {what} on --num-processes processes")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--accelerate-config", default=None,
                        help="infra/accelerate/<name>.yaml (default: CPU gloo or plain DDP)")
