"""`vlmforge ablate STUDY [--seeds N] [--workers W] [--json]`: run an ablation study (configs/ablations/STUDY.yaml
or a path) and print its table: each arm's mean and 95 % interval over seeds, the published
claim and whether it reproduced."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def study_path(name: str) -> Path:
    from flows.environment import PROJECT_ROOT

    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    found = PROJECT_ROOT / "configs" / "ablations" / f"{name}.yaml"
    if not found.exists():
        raise SystemExit(f"no study {name!r}: not a file, and not in configs/ablations/")
    return found


def render(result: dict) -> str:
    lines = [f"study {result['study']}: {result['claim']} ({result['source']})"]
    metrics = list(next(iter(result["table"].values()), {}))
    lines.append(f"{'arm':<18}" + "".join(f"{m:>32}" for m in metrics))
    for arm, table in result["table"].items():
        cells = [f"{t['mean']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]" if (t := table.get(m)) else "-"
                 for m in metrics]
        lines.append(f"{arm:<18}" + "".join(f"{c:>32}" for c in cells))
    d = result["difference"]
    if d:
        lines.append(f"{result['treatment']} - {result['baseline']} on {result['primary']}: "
                     f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over {d['n']} seeds, "
                     f"expected {result['direction']}")
    lines.append(f"reproduced: {str(result['reproduced']).lower()}  ({result['seconds']:.0f} s, "
                 f"MLflow run {result['run_id']})")
    return "\n".join(lines)


def cmd_ablate(args: argparse.Namespace) -> int:
    from flows.environment import configure_stores

    configure_stores()
    import yaml

    from components.ablation import load_study
    from flows.ablate import ablate

    path = study_path(args.study)
    study = load_study(path)
    base = path.parent / study.base
    base = base if base.exists() else Path(study.base)
    seeds = study.seeds[: args.seeds] if args.seeds else None
    result = ablate(study, yaml.safe_load(base.read_text()), seeds, workers=args.workers)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


def add_ablate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ablate", help="run an ablation study: arms x seeds, the table with "
                                             "95 %% intervals, and whether the claim reproduced")
    p.add_argument("study", help="a study of configs/ablations/ (name) or a study file")
    p.add_argument("--seeds", type=int, default=None, help="the first N of the study's seeds")
    p.add_argument("--workers", type=int, default=1,
                   help="seeds run at once, each in its own process on an equal share of the cores")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_ablate)
    return p
