"""`vlmforge`: the command line, wiring only. Each command lives in flows/commands/ and
imports heavy libraries inside its function, so `vlmforge --help` answers instantly."""

from __future__ import annotations

import argparse
import sys

from flows.commands.ablate import add_ablate_parser
from flows.commands.bench import add_bench_parser
from flows.commands.evaluate import add_evaluate_parser
from flows.commands.export import add_export_parser
from flows.commands.ingest import add_ingest_parser
from flows.commands.lineage import add_lineage_parser
from flows.commands.promote import add_promote_parser
from flows.commands.run import add_run_parsers
from flows.commands.schedule import add_schedule_parser
from flows.commands.score import add_score_parser
from flows.commands.serve import add_serve_parser
from flows.commands.ui import add_ui_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmforge",
        description="Train, track, version and promote vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parsers(sub)
    for add in (add_evaluate_parser, add_ui_parser, add_bench_parser, add_score_parser,
                add_promote_parser, add_serve_parser, add_schedule_parser, add_ingest_parser,
                add_export_parser, add_lineage_parser, add_ablate_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kept = getattr(args, "kept", None)  # commands that run stages say what a stop keeps
    if kept is None:
        return args.func(args)
    from flows.stopping import run_stoppable  # SIGTERM / Ctrl-C: workers stop, runs end KILLED

    return run_stoppable(args.command, lambda: args.func(args),
                         lambda phase, killed: kept(args, phase, killed))


if __name__ == "__main__":
    sys.exit(main())
