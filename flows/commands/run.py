"""`vlmforge run` (the whole pipeline) and `vlmforge data|backbones|pretrain|sft|align` (one
stage alone, from what the earlier stages already produced). Only the standard library and
the light recipe vocabulary are imported at module level."""

from __future__ import annotations

import argparse
import sys

from components.recipe import STAGE_KINDS


def open_recipe(path: str):
    """The offline environment, the tracking store and the validated recipe."""
    from flows.environment import configure_stores

    configure_stores()
    from components.recipe import load_recipe

    return load_recipe(path)


def upstream(recipe):
    """The data version and backbone versions the earlier stages produced for ``recipe``."""
    from flows.stages.backbones import registered_backbones
    from flows.stages.data import current_data

    data = current_data(recipe)
    return data, registered_backbones(recipe, data)


def cmd_run(args: argparse.Namespace) -> int:
    recipe = open_recipe(args.recipe)
    from flows.pipeline import pipeline

    result = pipeline(recipe, force=args.force)
    print(result.summary(recipe.registered_model))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    recipe = open_recipe(args.recipe)
    from flows.stages.data import data_flow

    data = data_flow(recipe)
    print(f"data version {data.version}: {data.counts}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    recipe = open_recipe(args.recipe)
    from flows.stages.backbones import backbones_flow
    from flows.stages.data import data_flow

    for b in backbones_flow(recipe, data_flow(recipe), force=args.force):
        print(f"{b.name} v{b.version}{' (cached)' if b.cached else ''} {b.metrics}")
    return 0


def cmd_training(args: argparse.Namespace) -> int:
    """`vlmforge <kind>`: every stage of that kind, inline or on N launched processes."""
    recipe = open_recipe(args.recipe)
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


def add_run_parsers(subparsers: argparse._SubParsersAction) -> None:
    """`run`, `data`, `backbones` and one command per stage kind."""
    run = subparsers.add_parser("run", help="the whole pipeline: data -> ... -> evaluate + promotion")
    run.add_argument("--recipe", required=True, help="recipe YAML, e.g. configs/tiny.yaml")
    run.add_argument("--force", action="store_true", help="retrain stages even when unchanged")
    run.set_defaults(func=cmd_run)
    for name, func in (("data", cmd_data), ("backbones", cmd_backbones),
                       *((kind, cmd_training) for kind in STAGE_KINDS)):
        p = subparsers.add_parser(name, help=f"run the {name} stage alone")
        p.add_argument("--recipe", required=True)
        p.add_argument("--force", action="store_true")
        if name in STAGE_KINDS:
            p.add_argument("--launcher", choices=["inline", "accelerate"], default="inline",
                           help="accelerate: run the stage on --num-processes processes")
            p.add_argument("--num-processes", type=int, default=2)
            p.add_argument("--accelerate-config", default=None,
                           help="infra/accelerate/<name>.yaml (default: CPU gloo or plain DDP)")
        p.set_defaults(func=func)
