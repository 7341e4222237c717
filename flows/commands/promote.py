"""`vlmforge promote`: move the `champion` alias to a version through the promotion gate.

    vlmforge promote --model vlm-tiny --version 7 --dry-run
    vlmforge promote --model vlm-tiny --version 5 --force --reason "rollback: v7 broke OCR"

Prints the comparison (metric, champion, candidate, delta, verdict) and the decision. The
gate is the recipe's (``evaluate.primary_metric``, ``min_delta``, ``guarded``), each part
overridable. Exit status: 0 promoted (or would be, with --dry-run), 1 refused by the gate,
2 an error (unknown version, a version without evaluation metrics, bad arguments).
Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RECIPE = "configs/tiny.yaml"


def parse_guard(text: str) -> tuple[str, float]:
    """``METRIC=TOLERANCE`` -> (metric, tolerance >= 0)."""
    metric, sep, value = text.partition("=")
    try:
        tolerance = float(value)
    except ValueError:
        tolerance = -1.0
    if not sep or not metric or tolerance < 0:
        raise argparse.ArgumentTypeError(f"--guard {text!r}: expected METRIC=TOLERANCE with "
                                         "a tolerance >= 0")
    return metric, tolerance


def gate_from_args(args: argparse.Namespace):
    """The recipe's gate with the command line's overrides."""
    from registry.promotion import GateConfig

    primary, min_delta, guarded = None, 0.0, {}
    recipe_path = Path(args.recipe) if args.recipe else None
    if recipe_path is not None and recipe_path.is_file():
        from components.recipe import load_recipe

        ev = load_recipe(recipe_path).evaluate
        primary, min_delta, guarded = ev.primary_metric, ev.min_delta, dict(ev.guarded)
    elif args.recipe and args.recipe != DEFAULT_RECIPE:
        raise ValueError(f"recipe {args.recipe!r} not found")
    if args.primary:
        primary = args.primary
    if args.min_delta is not None:
        min_delta = args.min_delta
    guarded.update(dict(args.guard or []))
    if primary is None:
        raise ValueError("no gate: give --recipe or --primary")
    return GateConfig(primary=primary, min_delta=min_delta, guarded=guarded,
                      higher_is_better=not args.lower_is_better)


def promote_command(args: argparse.Namespace) -> int:
    """Gate, print the table, move the alias (unless --dry-run or refused)."""
    from registry.promotion import comparison_table, promote

    name = args.model.removeprefix("models:/")
    if not str(args.version).isdigit():
        print(f"vlmforge promote: error: --version {args.version!r} must be a version number",
              file=sys.stderr)
        return 2
    if args.force and not (args.reason and args.reason.strip()):
        print("vlmforge promote: error: --force needs --reason \"...\" (recorded on the version)",
              file=sys.stderr)
        return 2
    try:
        gate = gate_from_args(args)
        d = promote(name, args.version, None, gate, alias=args.alias, dry_run=args.dry_run,
                    force=args.force, reason=args.reason)
    except (ValueError, LookupError) as exc:
        print(f"vlmforge promote: error: {exc}", file=sys.stderr)
        return 2
    guards = ", ".join(f"{m} -{t:g}" for m, t in sorted(gate.guarded.items())) or "none"
    print(f"{name}: v{args.version} against '{args.alias}' "
          f"({'v' + d.previous if d.previous else 'none'}); gate: {gate.primary} "
          f"+{gate.min_delta:g}, guarded: {guards}")
    if d.rows:
        print(comparison_table(d, args.version))
    if not d.promote:
        print(f"not promoted: {d.reason}")
        return 1
    if args.dry_run:
        print(f"dry run: would promote v{args.version} to '{args.alias}' ({d.reason}); "
              "nothing changed")
    else:
        print(f"promoted: v{args.version} is now '{args.alias}'"
              f"{' (was v' + d.previous + ')' if d.previous else ''}: {d.reason}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from flows.environment import configure_stores

    configure_stores()
    return promote_command(args)


def add_promote_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `promote` sub-command."""
    p = subparsers.add_parser(
        "promote", help="move 'champion' to a version through the promotion gate")
    p.add_argument("--model", required=True, help="registered model name, e.g. vlm-tiny")
    p.add_argument("--version", required=True, help="the candidate version number")
    p.add_argument("--alias", default="champion")
    p.add_argument("--dry-run", action="store_true", help="compare and decide, change nothing")
    p.add_argument("--force", action="store_true",
                   help="skip the gate (needs --reason; a version without metrics still fails)")
    p.add_argument("--reason", help="why; recorded on the version (required with --force)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help="recipe whose evaluate section is the gate (default: %(default)s)")
    p.add_argument("--primary", help="primary metric (overrides the recipe's)")
    p.add_argument("--min-delta", type=float, help="least improvement of the primary metric")
    p.add_argument("--guard", action="append", type=parse_guard, metavar="METRIC=TOL",
                   help="guarded metric and how much it may drop; repeatable")
    p.add_argument("--lower-is-better", action="store_true",
                   help="the metrics are losses/error rates")
    p.set_defaults(func=cmd_promote)
    return p
