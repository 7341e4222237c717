"""`vlmforge`: the command line. Heavy libraries are imported only inside commands,
so `vlmforge --help` answers instantly."""

from __future__ import annotations

import argparse
import sys

from flows.bench import BENCHES
from flows.evaluate_cli import add_evaluate_parser
from flows.ingest import add_ingest_parser
from flows.promote import add_promote_parser
from flows.schedule import add_schedule_parser
from flows.score import add_score_parser
from flows.serve import add_serve_parser

STAGES = ("data", "backbones", "pretrain", "sft", "align", "evaluate")


def _setup(args: argparse.Namespace):
    """Environment, tracking store and the validated recipe."""
    from flows.environment import configure_environment

    home = configure_environment()
    import registry
    from components.recipe import load_recipe

    registry.configure(home)
    return load_recipe(args.recipe)


def cmd_run(args: argparse.Namespace) -> int:
    recipe = _setup(args)
    from flows.pipeline import pipeline

    result = pipeline(recipe, force=args.force)
    print(result.summary(recipe.registered_model))
    return 0


def _upstream(recipe):
    """Data version and backbone versions already produced for this recipe."""
    import registry
    from components.recipe import fingerprint
    from flows.backbones import BackboneOutcome
    from flows.data import read_version, workspace_for

    ws = workspace_for(recipe)
    if not (ws / "dvc.lock").exists():
        raise SystemExit(f"no data for recipe {recipe.name!r}: run `vlmforge data --recipe ...` first")
    data = read_version(ws)
    backbones = []
    if recipe.backbones is not None:
        for spec in (recipe.backbones.vision, recipe.backbones.text):
            version = registry.find_version(spec.registered_model,
                                            {"cache_key": fingerprint(spec, data.version, recipe.seed)})
            if version is None:
                raise SystemExit(f"backbone {spec.registered_model!r} not trained on data "
                                 f"{data.version}: run `vlmforge backbones --recipe ...` first")
            run_id = registry.version_info(spec.registered_model, version)["run_id"]
            backbones.append(BackboneOutcome(spec.registered_model, version, run_id, True, 0.0, 0))
    return data, backbones


def cmd_stage(args: argparse.Namespace) -> int:
    recipe = _setup(args)
    if args.command == "data":
        from flows.data import data_flow

        data = data_flow(recipe)
        print(f"data version {data.version}: {data.counts}")
        return 0
    if args.command == "backbones":
        from flows.backbones import backbones_flow
        from flows.data import data_flow

        for b in backbones_flow(recipe, data_flow(recipe), force=args.force):
            print(f"{b.name} v{b.version}{' (cached)' if b.cached else ''} {b.metrics}")
        return 0
    if getattr(args, "launcher", "inline") == "accelerate":
        _upstream(recipe)  # fail fast when data or backbones are missing
        from flows.launch import launch_stage

        return launch_stage(args.recipe, args.command, args.num_processes,
                            args.accelerate_config, args.force)
    data, backbones = _upstream(recipe)
    from flows.training import STAGE_FLOWS

    for s in STAGE_FLOWS[args.command](recipe, data, backbones, force=args.force):
        print(f"{s.stage}: {recipe.registered_model} v{s.version}{' (cached)' if s.cached else ''} "
              f"run {s.run_id}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from flows.ui import serve_dashboards

    return serve_dashboards(args.mlflow_port, args.prefect_port)


def cmd_bench(args: argparse.Namespace) -> int:
    from flows.bench import run_bench

    return run_bench(args.name, args.recipe, as_json=args.json, model=args.model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmforge",
        description="Train, track, version and promote vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the whole pipeline: data -> ... -> evaluate + promotion")
    run.add_argument("--recipe", required=True, help="recipe YAML, e.g. configs/tiny.yaml")
    run.add_argument("--force", action="store_true", help="retrain stages even when unchanged")
    run.set_defaults(func=cmd_run)

    for name in STAGES:
        if name == "evaluate":  # suites, models:/ URIs, --suite-config: flows/evaluate_cli.py
            add_evaluate_parser(sub)
            continue
        p = sub.add_parser(name, help=f"run the {name} stage alone")
        p.add_argument("--recipe", required=True)
        p.add_argument("--force", action="store_true")
        if name in ("pretrain", "sft", "align"):
            p.add_argument("--launcher", choices=["inline", "accelerate"], default="inline",
                           help="accelerate: run the stage on --num-processes processes")
            p.add_argument("--num-processes", type=int, default=2)
            p.add_argument("--accelerate-config", default=None,
                           help="infra/accelerate/<name>.yaml (default: CPU gloo or plain DDP)")
        p.set_defaults(func=cmd_stage)

    ui = sub.add_parser("ui", help="MLflow UI and Prefect server on 127.0.0.1")
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.set_defaults(func=cmd_ui)

    bench = sub.add_parser("bench", help="measurements side by side, each with a ratio")
    bench.add_argument("name", choices=list(BENCHES))
    bench.add_argument("--recipe", default="configs/tiny.yaml", help="the recipe measured")
    bench.add_argument("--model", default="models:/vlm-tiny@champion", help="for serve")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    add_score_parser(sub)
    add_promote_parser(sub)
    add_serve_parser(sub)
    add_schedule_parser(sub)
    add_ingest_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
