"""`vlmforge lineage models:/NAME/VERSION` and `vlmforge lineage --data HASH`: where a version
came from and what it scored; every version trained on a data version or dataset hash."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_lineage(args: argparse.Namespace) -> int:
    from flows.environment import configure_stores

    configure_stores()
    from registry.lineage import data_lineage, parse_model_uri, render_version, version_lineage

    try:
        if args.data:
            found = data_lineage(args.data)
            if args.json:
                print(json.dumps(found, indent=1))
            else:
                print(f"{len(found)} version(s) trained on data {args.data}:")
                for v in found:
                    scores = {k: val for entry in v["scores"].values()
                              for k, val in entry["metrics"].items() if not k.endswith(("_ci_low", "_ci_high"))}
                    print(f"  {v['model']}  stage {v['stage']}  (matched {', '.join(v['matched'])})")
                    print("    " + ", ".join(f"{k}={val:.4f}" for k, val in sorted(scores.items())))
            return 0
        lineage = version_lineage(*parse_model_uri(args.model))
    except (ValueError, LookupError) as exc:
        print(f"vlmforge lineage: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(lineage, indent=1) if args.json else render_version(lineage))
    return 0


def add_lineage_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("lineage", help="a version's data, datasets, recipe, commit, parents and "
                                              "scores; or every version trained on a data hash")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("model", nargs="?", help="models:/<name>/<version>")
    which.add_argument("--data", metavar="HASH", help="a data version or dataset content hash")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)
    return p
