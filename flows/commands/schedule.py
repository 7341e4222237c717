"""`vlmforge schedule`: run the pipeline (or the champion's evaluation) on a cron or
interval schedule from this machine, without a work pool: `Flow.serve` creates the
deployment and runs each scheduled flow run here until Ctrl-C.

Schedules need a Prefect server (its scheduler creates the runs): $PREFECT_API_URL, a
server already answering on 127.0.0.1 (e.g. `vlmforge ui`), or one started here over the
embedded Prefect home. Teams with a server and workers use prefect.yaml instead.
Only the standard library is imported at module level (`vlmforge --help` stays fast).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

# --flow -> (flow object in flows.deployments, deployment name as in prefect.yaml)
FLOWS = {"pipeline": ("run_recipe", "pipeline"), "evaluate": ("evaluate_champion", "evaluate-champion")}
DEFAULT_PREFECT_PORT = 4200


def add_schedule_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `schedule` command on the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "schedule", help="run the pipeline or the champion's evaluation on a schedule (until Ctrl-C)",
        description="Serve a scheduled deployment from this machine: each run executes here.")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * 0" (Sundays at 03:00)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="seconds between runs")
    p.add_argument("--flow", choices=sorted(FLOWS), default="pipeline",
                   help="pipeline: the whole recipe; evaluate: the held-out suite on --model")
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. configs/tiny.yaml")
    p.add_argument("--model", default="champion", help="evaluate: an alias or a version number")
    p.add_argument("--force", action="store_true", help="retrain / re-score even when unchanged")
    p.add_argument("--timezone", help="of the cron schedule, e.g. Europe/Paris (default UTC)")
    p.add_argument("--name", help="deployment name (default: <deployment>-<recipe name>)")
    p.add_argument("--prefect-port", type=int, default=DEFAULT_PREFECT_PORT,
                   help="port of the local Prefect server used when PREFECT_API_URL is unset")
    p.set_defaults(func=cmd_schedule)
    return p


def serve_flow(flow: Any, *, name: str, cron: str | None = None, interval: float | None = None,
               timezone: str | None = None, parameters: dict[str, Any] | None = None,
               module_entrypoint: bool = False) -> None:
    """`flow.serve` with one cron or interval schedule; blocks until interrupted.

    ``module_entrypoint`` records the flow by module path (importable from anywhere, as an
    installed package's flows are) instead of by file path relative to the working directory.
    """
    from prefect.client.schemas.schedules import construct_schedule
    from prefect.types.entrypoint import EntrypointType

    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of cron and interval")
    schedule = construct_schedule(cron=cron, interval=interval, timezone=timezone)
    flow.serve(name=name, schedules=[schedule], parameters=parameters or {},
               entrypoint_type=EntrypointType.MODULE_PATH if module_entrypoint
               else EntrypointType.FILE_PATH)


def cmd_schedule(args: argparse.Namespace) -> int:
    from flows.environment import configure_environment

    home = configure_environment()
    os.environ["VLMFORGE_HOME"] = str(home)  # the flow runs (subprocesses) use the same stores
    recipe_path = Path(args.recipe).expanduser().resolve()
    from components.recipe import load_recipe

    recipe = load_recipe(recipe_path)  # a bad recipe fails now, not at the first scheduled run
    attr, deployment = FLOWS[args.flow]
    parameters: dict[str, Any] = {"recipe_path": str(recipe_path), "force": args.force}
    if args.flow == "evaluate":
        parameters["model"] = args.model
    from flows.commands.ui import prefect_api

    # Ctrl-C stops serving (and a server started here) even where SIGINT came in ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with prefect_api(args.prefect_port) as api_url:
        import flows.deployments as deployments

        name = args.name or f"{deployment}-{recipe.name}"
        when = f"cron {args.cron!r}" if args.cron else f"every {args.interval:g} s"
        print(f"serving {getattr(deployments, attr).name}/{name} ({when}) on {api_url}; "
              "Ctrl-C stops it", flush=True)
        serve_flow(getattr(deployments, attr), name=name, cron=args.cron, interval=args.interval,
                   timezone=args.timezone, parameters=parameters, module_entrypoint=True)
    return 0
