"""`vlmforge ingest FORMAT --source PATH [--images DIR] --out DIR`: public formats -> shards.

The work is components.data.ingest (no Prefect, no MLflow); this module parses the
arguments, prints the JSON summary and logs the counts per rule to an MLflow run
``ingest`` (``--no-mlflow`` to skip). Exit 1, with the reason on stderr, when the
quarantine rate passes ``--max-quarantine-rate`` (or the ``--recipe``'s
``data.max_quarantine_rate``) or a Great Expectations suite fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SUMMARY_KEYS = ("format", "read", "accepted", "quarantined", "rules", "quarantine_rate",
                "max_quarantine_rate", "images_dropped", "images_dropped_rules", "files",
                "validation", "shards", "out", "seconds")


class _RunFailed(Exception):
    """Raised inside the MLflow run so that it ends FAILED."""


def cmd_ingest(args: argparse.Namespace) -> int:
    from components.data.ingest.checks import Limits
    from components.data.ingest.run import ingest
    from components.data.quarantine import QuarantineRateError
    from components.data.validation import DataValidationError

    limits = Limits(args.min_side, args.max_side, args.max_text_chars)
    if args.max_quarantine_rate is None:
        args.max_quarantine_rate = _recipe_threshold(args.recipe)
    error: Exception | None = None
    try:
        summary = ingest(args.format, args.source, args.out, args.images, split=args.split,
                         limits=limits, shard_size=args.shard_size,
                         max_quarantine_rate=args.max_quarantine_rate)
    except (QuarantineRateError, DataValidationError) as e:
        error, summary = e, e.summary  # type: ignore[attr-defined]
    except (FileNotFoundError, ValueError) as e:
        print(f"vlmforge ingest: error: {e}", file=sys.stderr)
        return 2
    result = {k: summary.to_dict()[k] for k in SUMMARY_KEYS}
    print(json.dumps(result, indent=1))
    if not args.no_mlflow:
        log_ingest(summary.to_dict(), args, error)
    if error is not None:
        print(f"vlmforge ingest: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _recipe_threshold(recipe: str | None) -> float:
    """The recipe's `data.max_quarantine_rate` (the data section's default without a recipe)."""
    from components.data.params import DataParams
    from components.recipe import load_recipe

    return (load_recipe(recipe).data if recipe else DataParams()).max_quarantine_rate


def log_ingest(summary: dict[str, Any], args: argparse.Namespace, error: Exception | None) -> str:
    """One MLflow run: params, counts (per rule too) and the summary/validation/quarantine files."""
    from pathlib import Path

    from flows.environment import configure_stores

    configure_stores()
    import registry
    out = Path(summary["out"])
    tags = {"stage": "ingest", "format": summary["format"]}
    run_id = ""
    try:
        with registry.start_run("ingest", tags=tags) as run_id:
            registry.log_params({"format": summary["format"], "source": summary["source"],
                                 "images": args.images, "split": args.split,
                                 "max_quarantine_rate": args.max_quarantine_rate,
                                 "min_side": args.min_side, "max_side": args.max_side,
                                 "max_text_chars": args.max_text_chars})
            metrics = {k: summary[k] for k in ("read", "accepted", "quarantined",
                                               "quarantine_rate", "images_dropped")}
            metrics.update({f"quarantined_{rule}": n for rule, n in summary["rules"].items()})
            registry.log_metrics(metrics)
            for name in ("summary.json", "validation.json", "quarantine/quarantine.jsonl",
                         "quarantine/images_quarantined.jsonl", "quarantine/files.jsonl"):
                if (out / name).exists():
                    registry.log_artifact(out / name)
            if error is not None:
                raise _RunFailed  # ends the run FAILED
    except _RunFailed:
        pass
    print(f"mlflow run {run_id}", file=sys.stderr)
    return run_id


def add_ingest_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ingest", help="public dataset formats -> webdataset shards + quarantine (JSON summary)")
    from components.data.ingest import FORMATS  # light: readers import their libraries on use

    p.add_argument("format", choices=list(FORMATS))
    p.add_argument("--source", required=True, help="input file or folder of the format")
    p.add_argument("--images", default=None,
                   help="image folder for path references (default: the source's folder)")
    p.add_argument("--out", required=True, help="output folder (shards/, quarantine/, ...)")
    p.add_argument("--split", default="train")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--max-quarantine-rate", type=float, default=None,
                   help="fail when a larger fraction of records is quarantined (default: the "
                        "recipe's data.max_quarantine_rate, 0.05 without a recipe)")
    p.add_argument("--recipe", default=None, help="recipe whose data section gives the threshold")
    p.add_argument("--min-side", type=int, default=8)
    p.add_argument("--max-side", type=int, default=4096)
    p.add_argument("--max-text-chars", type=int, default=20000)
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.set_defaults(func=cmd_ingest)
    return p
