"""`vlmforge evaluate --rejudge RUN_ID`: judge the stored predictions of a run's judged suites
again, without generating them again, under the judge the current recipe / --suite-config
names for each suite (else the recorded judge), changed by the --judge-* flags.

    vlmforge evaluate --rejudge 3f2c...                       # same judge: no new call
    vlmforge evaluate --rejudge 3f2c... --judge-backend openai --judge-model gpt-4o \\
        --judge-base-url https://api.openai.com/v1 --judge-api-key-env VLMFORGE_JUDGE_OPENAI

Only the standard library is imported at module level, so `vlmforge --help` stays light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

JUDGE_FLAGS = {  # flag -> JudgeSpec field
    "judge_backend": "backend", "judge_model": "model", "judge_base_url": "base_url",
    "judge_api_key_env": "api_key_env", "judge_max_calls": "max_calls",
    "judge_max_tokens": "max_tokens",
}


def add_rejudge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--rejudge and the --judge-* flags that change the judge it replays under."""
    parser.add_argument("--rejudge", metavar="RUN_ID",
                        help="replay the judge records of this MLflow run (or of its child "
                             "runs) under the current suite's judge; nothing is generated")
    group = parser.add_argument_group("--rejudge judge (default: the suite's, else recorded)")
    group.add_argument("--judge-backend", choices=("local", "openai"))
    group.add_argument("--judge-model", help="local: a model directory; openai: a model name")
    group.add_argument("--judge-base-url", help="openai: the API root (https, or http on "
                                                "127.0.0.1 / ::1 / localhost)")
    group.add_argument("--judge-api-key-env", metavar="VLMFORGE_JUDGE_*",
                       help="openai: the environment variable holding the API key")
    group.add_argument("--judge-max-calls", type=int, metavar="N", help="budget: new calls")
    group.add_argument("--judge-max-tokens", type=int, metavar="N", help="budget: tokens")
    return parser


def format_rejudge(outcomes) -> str:
    """Per replayed suite: its scores beside the recorded ones, the new calls and their cost."""
    lines = []
    for o in outcomes:
        s = o.summary
        lines.append(f"{o.suite}: rejudged run {o.source_run_id} under {o.judge} "
                     f"({o.judge_from}): run {o.run_id}")
        lines += [f"  {k:<40}{v:.4f}" + (f"  (recorded {o.recorded[k]:.4f})"
                                         if k in o.recorded else "")
                  for k, v in sorted(o.metrics.items())]
        lines.append(f"  new judge calls {s['calls']}, tokens "
                     f"{s['prompt_tokens'] + s['completion_tokens']}, estimated cost "
                     f"{s['estimated_cost']:.4f}; judged {s['judged']} of {s['items']}")
        if s["stopped"]:
            lines.append(f"  {s['stopped']}")
    return "\n".join(lines)


def rejudge_command(recipe, args: argparse.Namespace) -> int:
    """What `vlmforge evaluate --rejudge` does once the recipe is known."""
    from components.evaluation.judge import JudgeError
    from components.evaluation.suites import load_suite_config, parse_suites
    from flows.environment import vlmforge_home
    from flows.stages.judge_records import rejudge

    overrides = {field: getattr(args, flag, None) for flag, field in JUDGE_FLAGS.items()}
    try:
        raw = recipe.evaluate.suites
        specs = parse_suites(raw, f"recipe {recipe.name!r} evaluate.suites", Path.cwd()) if raw else {}
        if args.suite_config:
            specs.update(load_suite_config(args.suite_config))
        judges = {name: spec.judge for name, spec in specs.items() if spec.judge is not None}
        outcomes = rejudge(args.rejudge, judges, overrides, vlmforge_home() / "judge-cache",
                           suites=args.suites)
    except (ValueError, LookupError, JudgeError) as exc:
        print(f"vlmforge evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_rejudge(outcomes))
    return 0

