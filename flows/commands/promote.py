"""`vlmforge promote`: move the `champion` alias to a version through the promotion gate.

    vlmforge promote --model vlm-tiny --version 7 --dry-run
    vlmforge promote --model vlm-tiny --version 5 --force --reason "rollback: v7 broke OCR"

Prints the gate, then every metric of both versions with the 95 % interval of their paired
difference (bootstrap over the items both were scored on), McNemar's exact p for shares of
right answers, and each verdict; then the decision. The gate is the recipe's (its `evaluate`
section); an override may tighten it, and one that loosens it (another --primary, a lower
--min-delta, a wider --guard, --lower-is-better for a higher-is-better primary) needs --force
and --reason, like any forced promotion, and is recorded on the version with the gate used.
Exit status: 0 promoted (or would be, with --dry-run), 1 refused by the gate, 2 an error
(unknown version, a version without evaluation metrics, bad arguments, a loosened gate
without --force), 3 lost a race (another promotion moved the alias first; nothing recorded).
Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

DEFAULT_RECIPE = "configs/tiny.yaml"
LOST_RACE = 3


def finite_float(text: str) -> float:
    """A finite number (``nan``/``inf`` would compare false and slip through any threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_guard(text: str) -> tuple[str, float]:
    """``METRIC=TOLERANCE`` -> (metric, finite tolerance >= 0)."""
    metric, sep, value = text.partition("=")
    try:
        tolerance = finite_float(value)
    except argparse.ArgumentTypeError:
        tolerance = -1.0
    if not sep or not metric or tolerance < 0:
        raise argparse.ArgumentTypeError(f"--guard {text!r}: expected METRIC=TOLERANCE with "
                                         "a finite tolerance >= 0")
    return metric, tolerance


def recipe_gate(args: argparse.Namespace):
    """The recipe's gate (the default recipe's `evaluate` defaults when it is not here)."""
    from components.recipe import Evaluation, load_recipe
    from registry.promotion import gate_from_recipe

    recipe_path = Path(args.recipe) if args.recipe else None
    if recipe_path is not None and recipe_path.is_file():
        return gate_from_recipe(load_recipe(recipe_path).evaluate)
    if args.recipe and args.recipe != DEFAULT_RECIPE:
        raise ValueError(f"recipe {args.recipe!r} not found")
    return gate_from_recipe(Evaluation())


def gate_from_args(args: argparse.Namespace):
    """The recipe's gate with the command line's overrides, and how they loosen it."""
    from registry.promotion import loosenings

    baseline = recipe_gate(args)
    gate = baseline
    if args.primary:
        gate = replace(gate, primary=args.primary)
    if args.min_delta is not None:
        gate = replace(gate, min_delta=args.min_delta)
    if args.guard:
        gate = replace(gate, guarded={**gate.guarded, **dict(args.guard)})
    if args.lower_is_better and not gate.lower(gate.primary):
        gate = replace(gate, lower_is_better=(*gate.lower_is_better, gate.primary))
    return gate, loosenings(gate, baseline)


def promote_command(args: argparse.Namespace) -> int:
    """Gate, print the table, move the alias (unless --dry-run, refused or loosened)."""
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
        gate, loosened = gate_from_args(args)
    except ValueError as exc:
        print(f"vlmforge promote: error: {exc}", file=sys.stderr)
        return 2
    if loosened and not args.force:
        print(f"vlmforge promote: error: these overrides loosen the recipe's gate "
              f"({'; '.join(loosened)}): that needs --force --reason \"...\" (recorded on the "
              "version)", file=sys.stderr)
        return 2
    try:
        d = promote(name, args.version, None, gate, alias=args.alias, dry_run=args.dry_run,
                    force=args.force, reason=args.reason, loosened=loosened)
    except (ValueError, LookupError) as exc:
        print(f"vlmforge promote: error: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: v{args.version} against '{args.alias}' "
          f"({'v' + d.previous if d.previous else 'none'}); gate: {gate.describe()}")
    if loosened:
        print(f"gate loosened, forced: {'; '.join(loosened)}")
    if d.rows:
        print(comparison_table(d, args.version, gate.confidence))
    if not d.promote:
        print(f"not promoted: {d.reason}")
        return LOST_RACE if d.lost_race else 1
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
    p.add_argument("--primary", help="primary metric (another than the recipe's needs --force)")
    p.add_argument("--min-delta", type=finite_float,
                   help="least gain of the primary metric (lower than the recipe's needs --force)")
    p.add_argument("--guard", action="append", type=parse_guard, metavar="METRIC=TOL",
                   help="guarded metric and how much it may drop; repeatable (a tolerance wider "
                        "than the recipe's needs --force)")
    p.add_argument("--lower-is-better", action="store_true",
                   help="the primary metric is a loss or an error rate (needs --force unless the "
                        "recipe says so)")
    p.set_defaults(func=cmd_promote)
    return p
