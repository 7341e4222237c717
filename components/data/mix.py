"""The per-source DVC stages: generate one source's shards, then mix them into the training layout.

``generate-<source>`` writes ``data/sources/<source>/{split}/<source>-NNNN.tar`` and its
manifests; ``shards`` copies every used source's shards into ``data/shards/{split}/`` and
concatenates the manifests in ``SOURCES`` order, so the result is byte-identical to
generating all sources at once (``python -m components.data generate``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from components.data.datasets import SPLIT_NAMES
from components.data.params import SOURCES, DataParams, load_data_params


def used_sources(params: DataParams) -> list[str]:
    """Sources with at least one sample in some split, in ``SOURCES`` order (the DVC foreach list)."""
    return [s for s in SOURCES if any(params.counts(split).get(s, 0) for split in params.splits)]


def only_source(params: DataParams, source: str) -> DataParams:
    """``params`` with every split restricted to ``source``."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {list(SOURCES)}")
    splits = {split: {source: params.counts(split).get(source, 0)} for split in params.splits}
    return params.model_copy(update={"splits": splits})


def generate_source(params: DataParams, source: str, out: str | Path,
                    workers: int | None = None) -> dict[str, Any]:
    """All splits of one source under ``out`` (shards + manifests); returns the corpus summary."""
    from components.data.corpus import generate_corpus

    return generate_corpus(only_source(params, source), out, workers=workers)


def mix_sources(params: DataParams, sources_dir: str | Path, out: str | Path,
                datasets_dir: str | Path | None = None) -> dict[str, Any]:
    """Copy the used sources' shards (then the datasets', by name) into ``out/{split}/`` and
    write ``out/manifests/{split}.jsonl``."""
    sources_dir, out = Path(sources_dir), Path(out)
    start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    counts: dict[str, dict[str, int]] = {}
    splits = list(params.splits) + [s for s in SPLIT_NAMES if params.datasets and s not in params.splits]
    for split in splits:
        (out / split).mkdir(parents=True)
        lines: list[str] = []
        counts[split] = {}
        parts = [(source, sources_dir / source, n) for source, n in
                 (params.counts(split).items() if split in params.splits else ()) if n]
        parts += [(name, Path(datasets_dir or "") / name, None) for name in sorted(params.datasets)]
        for source, src, n in parts:
            rows = _copy_source(source, src, split, out / split)
            if n is not None and len(rows) != n:
                raise ValueError(f"source {source!r} has {len(rows)} {split} samples, params say {n}: "
                                 "re-run its generate stage")
            lines += rows
            if rows:
                counts[split][source] = len(rows)
        (out / "manifests").mkdir(exist_ok=True)
        (out / "manifests" / f"{split}.jsonl").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8")
    return {"out": str(out), "counts": counts, "seconds": round(time.perf_counter() - start, 3)}


def _copy_source(source: str, src: Path, split: str, dest: Path) -> list[str]:
    """Copy one source's shards of ``split`` into ``dest``; its manifest rows."""
    manifest = src / "manifests" / f"{split}.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"no {split} manifest of source {source!r} under {src}: "
                                "is it in params.yaml's `sources` (or `data.datasets`)?")
    for shard in sorted((src / split).glob(f"{source}-*.tar")):
        shutil.copyfile(shard, dest / shard.name)
    return manifest.read_text(encoding="utf-8").splitlines()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m components.data.mix", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="one source's shards and manifests, all splits")
    gen.add_argument("--params", required=True, help="YAML file with a 'data:' section")
    gen.add_argument("--source", required=True, choices=list(SOURCES))
    gen.add_argument("--out", required=True)
    gen.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    mix = sub.add_parser("shards", help="mix the per-source shards into the training layout")
    mix.add_argument("--params", required=True)
    mix.add_argument("--sources", required=True, help="folder holding one folder per source")
    mix.add_argument("--out", required=True)
    mix.add_argument("--datasets", default=None,
                     help="folder holding one folder per dataset of `data.datasets`")
    args = parser.parse_args(argv)
    params = load_data_params(args.params)
    if args.command == "generate":
        result = generate_source(params, args.source, args.out, args.workers)
    else:
        result = mix_sources(params, args.sources, args.out, args.datasets)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
