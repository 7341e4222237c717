"""CLI for the DVC data stages: ``generate`` shards + manifests, train the ``tokenizer``,
``validate`` manifests, find training images of the evaluation suites (``contamination``),
draw example ``grid``s per source."""

from __future__ import annotations

import argparse
import json
import time

from components.data.params import load_data_params


def _generate(args: argparse.Namespace) -> dict[str, object]:
    from components.data.corpus import generate_corpus

    params = load_data_params(args.params)
    if args.executor == "dask":
        from components.data.parallel import generate_corpus_on_dask

        if args.dask_address:
            from distributed import Client

            with Client(args.dask_address) as client:
                return generate_corpus_on_dask(params, args.out, client=client)
        return generate_corpus_on_dask(params, args.out, n_workers=args.workers or 2)
    return generate_corpus(params, args.out, workers=args.workers)


def _tokenizer(args: argparse.Namespace) -> dict[str, object]:
    from components.data.tokenizer import corpus_texts, train_tokenizer

    params = load_data_params(args.params)
    start = time.perf_counter()
    tok = train_tokenizer(corpus_texts(args.shards, args.split), params.vocab_size, args.out,
                          split_digits=params.split_digits)
    return {
        "out": args.out,
        "vocab_size": len(tok),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _validate(args: argparse.Namespace) -> dict[str, object]:
    from pathlib import Path

    from components.data.validation import (
        DataValidationError,
        dataset_source_tasks,
        validate_manifest_file,
    )

    datasets = load_data_params(args.params).datasets if args.params else {}
    source_tasks = dataset_source_tasks(datasets) if datasets else None
    reports = {}
    for path in sorted(Path(args.shards, "manifests").glob("*.jsonl")):
        if datasets and not path.read_text().strip():
            continue  # a split no source fills (a dataset split by ratio without it)
        reports[path.stem] = validate_manifest_file(path, path.stem, source_tasks=source_tasks)
    if not reports:
        raise SystemExit(f"no manifests under {args.shards}/manifests")
    Path(args.out).write_text(json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1))
    failed = [r.message() for r in reports.values() if not r.success]
    if failed:
        raise DataValidationError("; ".join(failed))
    return {split: {"rows": r.n_rows, "success": r.success} for split, r in reports.items()}


def _contamination(args: argparse.Namespace) -> dict[str, object]:
    from pathlib import Path

    import yaml

    from components.data.duplicates import DEFAULT_SUITES, contamination

    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    mode = load_data_params(args.params).contamination
    start = time.perf_counter()
    report = contamination(args.shards, raw.get("suites") or DEFAULT_SUITES, mode)
    Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return {"out": args.out, "mode": mode, "train_overlap": report["train_overlap"],
            "suites": {k: v["train_samples"] for k, v in report["suites"].items()},
            "train_duplicate_pairs": report["train_duplicates"]["pairs"],
            "seconds": round(time.perf_counter() - start, 3)}


def _grid(args: argparse.Namespace) -> dict[str, object]:
    from components.data.grid import write_grids
    from components.data.params import SOURCES

    sources = args.sources or list(SOURCES)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise SystemExit(f"unknown sources {unknown}; expected some of {list(SOURCES)}")
    paths = write_grids(args.out, sources, args.n, args.seed, args.image_size)
    return {"out": args.out, "grids": len(paths)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m components.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write all splits' shards and manifests")
    gen.add_argument("--params", required=True, help="YAML file with a 'data:' section")
    gen.add_argument("--out", required=True, help="output folder for shards and manifests")
    gen.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    gen.add_argument("--executor", choices=["processes", "dask"], default="processes")
    gen.add_argument("--dask-address", default=None,
                     help="tcp://host:8786 (default: a LocalCluster on 127.0.0.1)")
    gen.set_defaults(run=_generate)
    tok = sub.add_parser("tokenizer", help="train the BPE tokenizer on a split's shards")
    tok.add_argument("--params", required=True)
    tok.add_argument("--shards", required=True, help="folder written by 'generate'")
    tok.add_argument("--out", required=True)
    tok.add_argument("--split", default="train")
    tok.set_defaults(run=_tokenizer)
    val = sub.add_parser("validate", help="great_expectations suite on every split's manifest")
    val.add_argument("--shards", required=True, help="folder written by 'generate'")
    val.add_argument("--params", default=None,
                     help="params.yaml: its data.datasets' sources and tasks are allowed too")
    val.add_argument("--out", required=True, help="JSON report")
    val.set_defaults(run=_validate)
    con = sub.add_parser("contamination", help="training images that duplicate a suite's images")
    con.add_argument("--params", required=True,
                     help="params.yaml: data.contamination and `suites` (default: the test split)")
    con.add_argument("--shards", required=True, help="folder written by 'generate'")
    con.add_argument("--out", required=True, help="JSON report (what quarantine mode skips)")
    con.set_defaults(run=_contamination)
    grid = sub.add_parser("grid", help="an example grid PNG per source (docs/data)")
    grid.add_argument("--out", required=True, help="folder for <source>.png")
    grid.add_argument("--sources", nargs="*", default=None, help="default: every source")
    grid.add_argument("--n", type=int, default=6, help="samples per grid")
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--image-size", type=int, default=64)
    grid.set_defaults(run=_grid)
    args = parser.parse_args(argv)
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
