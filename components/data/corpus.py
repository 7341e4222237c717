"""The synthetic corpus: generator registry, shard plan, parallel shard writing and manifests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.manifest import manifest_row, write_manifest
from components.data.params import DataParams
from components.data.sample import Sample
from components.data.shards import shard_name, write_shard
from components.data.synthetic import generator
from components.data.synthetic.fonts import available_fonts
from components.progress import progress


def generate_sample(source: str, seed: int, split: str, index: int, image_size: int = 64) -> Sample:
    """One sample, a pure function of (source, seed, split, index, image_size)."""
    return generator(source)(seed, index, split, image_size)


def generate_samples(
    source: str, seed: int, split: str, start: int, stop: int, image_size: int = 64
) -> Iterator[Sample]:
    """Samples ``start`` .. ``stop - 1`` of one source and split."""
    for index in range(start, stop):
        yield generate_sample(source, seed, split, index, image_size)


@dataclass(frozen=True)
class ShardJob:
    """One shard: a contiguous index range of one source in one split."""

    seed: int
    image_size: int
    split: str
    source: str
    shard: int
    start: int
    stop: int

    @property
    def filename(self) -> str:
        return shard_name(self.source, self.shard)


def shard_plan(params: DataParams, split: str) -> list[ShardJob]:
    """Shard jobs of a split, in source order then shard order."""
    jobs = []
    for source, count in params.counts(split).items():
        for shard, start in enumerate(range(0, count, params.shard_size)):
            stop = min(start + params.shard_size, count)
            jobs.append(ShardJob(params.seed, params.image_size, split, source, shard, start, stop))
    return jobs


def build_shard(job: ShardJob, out_dir: str | Path) -> list[dict[str, Any]]:
    """Generate and write one shard; returns its manifest rows."""
    rows: list[dict[str, Any]] = []

    def tracked() -> Iterator[Sample]:
        for sample in generate_samples(
            job.source, job.seed, job.split, job.start, job.stop, job.image_size
        ):
            rows.append(manifest_row(sample, job.split, job.filename))
            yield sample

    write_shard(tracked(), Path(out_dir) / job.split / job.filename)
    return rows


def _build(args: tuple[ShardJob, str]) -> list[dict[str, Any]]:
    return build_shard(*args)


# heavy imports a source needs, done once before forking when the plan has that source
WARM_UP_IMPORTS: dict[str, tuple[str, ...]] = {
    "charts": ("matplotlib.figure", "matplotlib.backends.backend_agg"),
    "documents": ("fpdf", "pypdfium2"),
}


def _warm_up(sources: set[str] | None = None) -> None:
    """Import what planned sources need and scan fonts once, before forking, so workers
    inherit them."""
    import importlib

    available_fonts()
    for source in sorted(sources or ()):
        for module in WARM_UP_IMPORTS.get(source, ()):
            importlib.import_module(module)
    if "ocr_wild" in (sources or ()):
        from components.data.synthetic.ocr_wild import warm_up

        warm_up()


# builds shard jobs into their manifest rows, in job order
JobRunner = Callable[[list["ShardJob"], Path], list[list[dict[str, Any]]]]


def run_jobs(
    jobs: list[ShardJob], out_dir: str | Path, workers: int | None = None
) -> list[list[dict[str, Any]]]:
    """Build shards, in a process pool when ``workers`` > 1; results keep job order."""
    workers = workers or os.cpu_count() or 1
    args = [(job, str(out_dir)) for job in jobs]
    _warm_up({job.source for job in jobs})
    with progress(total=len(jobs), desc="shards", unit="shard") as bar:
        if workers <= 1 or len(jobs) <= 1:
            return [_done(_build(a), bar) for a in args]
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = [pool.submit(_build, a) for a in args]
            for future in as_completed(futures):
                future.result()  # the first failure stops the bar here
                bar.update()
            return [f.result() for f in futures]


def _done(result: Any, bar) -> Any:
    bar.update()
    return result


def _clear_split(out_dir: Path, split: str) -> None:
    """Remove old shards of a split, so a smaller plan leaves no stale files behind."""
    for old in (out_dir / split).glob("*.tar*"):
        old.unlink()


def write_splits(
    params: DataParams,
    splits: list[str],
    out_dir: str | Path,
    workers: int | None = None,
    run: JobRunner | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Write shards of several splits and a manifest per split; returns rows.

    ``run`` builds the shard jobs and returns their rows in job order (default: one
    shared process pool of ``workers``); components/data/parallel.py passes a Dask one.
    """
    out_dir = Path(out_dir)
    plans = {split: shard_plan(params, split) for split in splits}
    for split in splits:
        _clear_split(out_dir, split)
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    jobs = [job for split in splits for job in plans[split]]
    results = iter(run(jobs, out_dir) if run else run_jobs(jobs, out_dir, workers))
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in splits:
        rows[split] = [row for _ in plans[split] for row in next(results)]
        write_manifest(rows[split], out_dir / "manifests" / f"{split}.jsonl")
    return rows


def write_split(
    params: DataParams, split: str, out_dir: str | Path, workers: int | None = None
) -> list[dict[str, Any]]:
    """Write ``out_dir/{split}/{source}-{shard:04d}.tar`` and ``out_dir/manifests/{split}.jsonl``."""
    return write_splits(params, [split], out_dir, workers)[split]


def generate_corpus(
    params: DataParams,
    out_dir: str | Path,
    workers: int | None = None,
    run: JobRunner | None = None,
) -> dict[str, Any]:
    """All splits of ``params``; returns a summary (counts per split and source, timing)."""
    start = time.perf_counter()
    rows = write_splits(params, list(params.splits), out_dir, workers, run)
    seconds = time.perf_counter() - start
    total = sum(len(r) for r in rows.values())
    counts = {split: {s: n for s, n in params.counts(split).items() if n} for split in rows}
    return {
        "out": str(out_dir),
        "counts": counts,
        "samples": total,
        "seconds": round(seconds, 3),
        "records_per_s": round(total / seconds, 1) if seconds > 0 else None,
        "workers": workers or os.cpu_count(),
    }
