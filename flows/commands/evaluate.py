"""`vlmforge evaluate`: benchmark suites on a registered version.

    vlmforge evaluate --model models:/vlm-tiny@champion --suite pope
    vlmforge evaluate --recipe configs/tiny.yaml                   # default suite + gate
    vlmforge evaluate --model 7 --suite synthetic_2shot --suite textvqa --suite-config suites.yaml
    vlmforge evaluate --rejudge RUN_ID   # judge a run's stored predictions again (rejudge.py)

Only the standard library is imported at module level, so `vlmforge --help` stays light.
"""

from __future__ import annotations

import argparse
import sys

from flows.commands.rejudge import add_rejudge_arguments

DEFAULT_RECIPE = "configs/tiny.yaml"


def parse_model_ref(ref: str | None, default_name: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``N``, ``models:/<name>/<N>``, ``models:/<name>@<alias>``
    or ``models:/<name>`` (its latest version: both None); None: the recipe's latest."""
    if ref is None:
        return default_name, None, None
    if not ref.startswith("models:/"):
        if not ref.isdigit():
            raise ValueError(f"--model {ref!r}: expected a version number or "
                             "models:/<name>[/<version>|@<alias>]")
        return default_name, ref, None
    body = ref.removeprefix("models:/")
    name, _, alias = body.partition("@")
    name, _, number = name.partition("/")
    if not name or (number and not number.isdigit()) or (number and alias) or "@" in alias:
        raise ValueError(f"--model {ref!r}: expected models:/<name>[/<version>|@<alias>]")
    return name, number or None, alias or None


def resolve_version(recipe, data, ref: str | None) -> tuple[str, str]:
    """The (registered model, version) that ``--model`` names; without it, the version the
    recipe's last stage trained on the current data."""
    import registry

    name, version, alias = parse_model_ref(ref, recipe.registered_model)
    if alias is not None:
        version = registry.get_alias(name, alias)
        if version is None:
            raise LookupError(f"{name!r} has no version with alias {alias!r}")
    elif version is None and ref is None:
        version = registry.find_version(name, {"stage": recipe.stages[-1].name,
                                               "data_version": data.version})
    elif version is None:
        versions = registry.list_versions(name)
        version = versions[-1]["version"] if versions else None
    if version is None:
        raise LookupError(f"nothing to evaluate for {name!r}")
    return name, version


def evaluate_command(recipe, data, args: argparse.Namespace) -> int:
    """What `vlmforge evaluate` does once the recipe and its data are known."""
    from components.evaluation.suites import DEFAULT_SUITE, load_suite_config
    from flows.stages.evaluate import evaluate_flow

    try:
        specs = load_suite_config(args.suite_config) if args.suite_config else {}
        name, version = resolve_version(recipe, data, args.model)
    except (ValueError, LookupError) as exc:
        print(f"vlmforge evaluate: error: {exc}", file=sys.stderr)
        return 2
    out = evaluate_flow(recipe, version, data, force=args.force, suites=args.suites,
                        suite_specs=specs, model_name=name)
    print(format_outcome(name, out, not args.suites or DEFAULT_SUITE in args.suites))
    return 0


def format_outcome(name: str, out, default_suite: bool) -> str:
    """Metrics of each suite (with its MLflow run) and the promotion result."""
    lines = []
    if default_suite:
        lines.append(f"{name} v{out.version}: synthetic "
                     f"{'(recorded scores) ' if out.cached else ''}run {out.run_id}")
        lines += [f"  {k:<40}{v:.4f}" for k, v in sorted(out.metrics.items())]
    for b in out.benchmarks.values():
        lines.append(f"{name} v{out.version}: {b.suite} "
                     f"{'(recorded scores) ' if b.cached else ''}run {b.run_id}")
        lines += [f"  {k:<40}{v:.4f}" for k, v in sorted(b.metrics.items())]
        if getattr(b, "note", ""):
            lines.append(f"  note: {b.note}")
    lines.append(f"promotion: {out.reason}; champion is v{out.champion}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.commands.run import open_recipe
    from flows.stages.data import current_data

    recipe = open_recipe(args.recipe)
    if getattr(args, "rejudge", None):
        from flows.commands.rejudge import rejudge_command

        return rejudge_command(recipe, args)
    try:
        data = current_data(recipe)
    except LookupError as exc:
        print(f"vlmforge evaluate: error: {exc}", file=sys.stderr)
        return 2
    return evaluate_command(recipe, data, args)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--model, --suite, --suite-config (the `evaluate` parser keeps --recipe and --force)."""
    parser.add_argument("--model", help="version number or models:/<name>[/<v>|@<alias>] "
                                        "(default: the recipe's latest trained version)")
    parser.add_argument("--suite", action="append", dest="suites", metavar="NAME",
                        help="synthetic (the held-out suite + promotion gate), pope, or a suite of "
                             "--suite-config / the recipe; repeatable (default: synthetic and "
                             "every suite of the recipe)")
    parser.add_argument("--suite-config", metavar="YAML",
                        help="named suites: {name: {kind: synthetic|pope|vqa|caption|mcq, ...}}")
    return parser


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The whole `evaluate` sub-command."""
    parser = subparsers.add_parser(
        "evaluate", help="benchmark a registered version (default suite: + promotion gate)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE,
                        help="recipe YAML: data, settings, gate (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="re-score even when unchanged")
    add_evaluate_arguments(parser)
    add_rejudge_arguments(parser)
    parser.set_defaults(func=cmd_evaluate)
    return parser
