"""Drive one format reader: check every record, write accepted ones to webdataset shards and
the rest to the quarantine, validate both with Great Expectations, return the counts.

Output layout under ``out``: ``shards/{format}-0000.tar``..., ``manifest.jsonl`` (accepted),
``quarantine/quarantine-0000.tar`` + ``quarantine.jsonl``, ``validation.json`` and
``summary.json``. Every record read ends in exactly one of the two: accepted + quarantined
== read, and the ledger suite checks it.

Images a document may lose (a Candidate with ``positions``: OBELICS) are the one exception
to "a failure quarantines the record": such an image is dropped, the document kept (counted
once, as accepted) and the image gets a row of its own in
``quarantine/images_quarantined.jsonl``, counted by ``images_dropped`` -- never in the record
ledger, so no document is counted twice.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.data.ingest import FORMATS
from components.data.ingest.checks import Limits, check_sample
from components.data.ingest.images import ImageLoader, ImageRef
from components.data.ingest.records import Candidate, Item, drop_image_parts
from components.data.manifest import write_manifest
from components.data.quarantine import (
    RULES,
    Quarantined,
    QuarantineRateError,
    QuarantineWriter,
    Reject,
    write_tar_sample,
)
from components.data.sample import Sample
from components.data.shards import sample_to_wds

MAX_EXAMPLES = 3
IMAGE_LEDGER = "images_quarantined.jsonl"


@dataclass
class IngestSummary:
    """Counts of one ingest; ``rules`` counts quarantined records per broken rule;
    ``images_dropped`` counts images left out of accepted documents (by rule in
    ``images_dropped_rules``), one row each in ``quarantine/images_quarantined.jsonl``."""

    format: str
    source: str
    out: str
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    images_dropped: int = 0
    images_dropped_rules: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    quarantine_rate: float = 0.0
    max_quarantine_rate: float = 1.0
    validation: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rate_message(self) -> str:
        """Why the quarantine rate is over the threshold: numbers, rules, example keys."""
        parts = [f"{rule} {n} (e.g. {', '.join(self.examples.get(rule, []))})"
                 for rule, n in sorted(self.rules.items(), key=lambda kv: -kv[1])]
        dropped = (f"; {self.images_dropped} image(s) dropped from accepted documents, see "
                   f"{self.out}/quarantine/{IMAGE_LEDGER}" if self.images_dropped else "")
        return (f"{self.format}: quarantined {self.quarantined} of {self.read} records "
                f"({self.quarantine_rate:.1%}), above the threshold "
                f"{self.max_quarantine_rate:.1%}; by rule: {'; '.join(parts)}; "
                f"see {self.out}/quarantine/quarantine.jsonl{dropped}")


@dataclass(frozen=True)
class DroppedImage:
    """An image left out of a kept document: where it stood and the rule it broke."""

    key: str
    location: str
    position: int
    image: ImageRef
    rule: str
    detail: str
    index: int  # its number among the candidate's images (which image part to remove)

    def row(self, fmt: str) -> dict[str, Any]:
        return {"format": fmt, "key": self.key, "location": self.location,
                "position": self.position, "url": self.image.url,
                "image": self.image.describe(), "rule": self.rule, "detail": self.detail}

    def brief(self) -> str:
        return f"position {self.position} {self.rule}: {self.detail}"


class ShardSink:
    """Writes samples to ``{stem}-0000.tar``, ``{stem}-0001.tar``... of ``size`` samples each."""

    def __init__(self, out_dir: Path, stem: str, size: int) -> None:
        self.dir, self.stem, self.size = out_dir, stem, size
        self.paths: list[Path] = []
        self._n = 0
        self._tar: tarfile.TarFile | None = None

    @property
    def current(self) -> str:
        return f"{self.stem}-{len(self.paths) - 1:04d}.tar"

    def write(self, sample: Sample) -> str:
        if self._tar is None or self._n == self.size:
            self._close()
            self.paths.append(self.dir / f"{self.stem}-{len(self.paths):04d}.tar")
            self._tar = tarfile.open(self.paths[-1].with_suffix(".tar.tmp"), "w",
                                     format=tarfile.USTAR_FORMAT)
            self._n = 0
        write_tar_sample(self._tar, sample_to_wds(sample))
        self._n += 1
        return self.current

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self.paths[-1].with_suffix(".tar.tmp"), self.paths[-1])
            self._tar = None

    def close(self) -> list[Path]:
        self._close()
        return self.paths


def safe_items(items: Iterator[Item], source: Path) -> Iterator[Item]:
    """Items of a reader; a reader that breaks becomes one last quarantined record."""
    try:
        yield from items
    except Exception as e:  # noqa: BLE001 (hostile input must not crash the ingest)
        rule = "unreadable_file" if isinstance(e, OSError) else "malformed_record"
        yield Quarantined(source.name, str(source), rule, f"{type(e).__name__}: {e}")


def _clear(out: Path) -> None:
    for pattern in ("shards/*.tar*", "quarantine/*"):
        for old in out.glob(pattern):
            old.unlink()


def ingest(
    fmt: str,
    source: str | Path,
    out: str | Path,
    images: str | Path | None = None,
    *,
    split: str = "train",
    limits: Limits | None = None,
    shard_size: int = 1000,
    max_quarantine_rate: float = 0.05,
    validate: bool = True,
) -> IngestSummary:
    """Ingest ``source`` in format ``fmt`` into ``out``.

    Raises :class:`QuarantineRateError` (after writing everything) when more than
    ``max_quarantine_rate`` of the records were quarantined, and
    :class:`~components.data.validation.DataValidationError` when a GE suite fails otherwise.
    """
    from components.data.validation import known_tasks

    if not 0 <= max_quarantine_rate <= 1:
        raise ValueError(f"max_quarantine_rate must be in [0, 1], got {max_quarantine_rate}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    start = time.perf_counter()
    limits = limits or Limits()
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"--source {source} does not exist")
    root = Path(images) if images is not None else (source if source.is_dir() else source.parent)
    loader = ImageLoader(root, limits.min_side, limits.max_side)
    tasks = frozenset(known_tasks())
    (out / "shards").mkdir(parents=True, exist_ok=True)
    _clear(out)
    summary = IngestSummary(fmt, str(source), str(out), max_quarantine_rate=max_quarantine_rate)
    sink = ShardSink(out / "shards", fmt, shard_size)
    manifest: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    seen: set[str] = set()
    rules: Counter[str] = Counter()
    image_rules: Counter[str] = Counter()
    with (QuarantineWriter(out / "quarantine", fmt) as quarantine,
          open(out / "quarantine" / IMAGE_LEDGER, "w", encoding="ascii") as image_ledger):
        for item in safe_items(FORMATS[fmt].read(source, images and Path(images)), source):
            summary.read += 1
            if isinstance(item, Candidate):
                item = _accept(item, loader, tasks, limits, seen, split)
            if isinstance(item, Quarantined):
                quarantine.write(item)
                rules[item.rule] += 1
                examples = summary.examples.setdefault(item.rule, [])
                if len(examples) < MAX_EXAMPLES:
                    examples.append(item.key)
                ledger.append({"key": item.key, "location": item.location,
                               "status": "quarantined", "rule": item.rule})
                continue
            sample, row, location, dropped = item
            for d in dropped:  # ASCII-escaped, like quarantine.jsonl
                image_ledger.write(json.dumps(d.row(fmt)) + "\n")
                image_rules[d.rule] += 1
            row["shard"] = sink.write(sample)
            manifest.append(row)
            ledger.append({"key": sample.key, "location": location, "status": "accepted",
                           "rule": None})
    summary.shards = [str(p) for p in sink.close()]
    write_manifest(manifest, out / "manifest.jsonl")
    summary.accepted, summary.quarantined = len(manifest), quarantine.count
    summary.rules = dict(sorted(rules.items()))
    summary.images_dropped = sum(image_rules.values())
    summary.images_dropped_rules = dict(sorted(image_rules.items()))
    summary.quarantine_rate = round(summary.quarantined / summary.read, 6) if summary.read else 0.0
    summary.seconds = round(time.perf_counter() - start, 3)
    written = _recount(summary.shards, out / "quarantine" / "quarantine.jsonl")
    if written != (summary.accepted, summary.quarantined) or sum(written) != summary.read:
        raise AssertionError(f"unbalanced ingest: read {summary.read}, but the output holds "
                             f"{written[0]} samples in shards and {written[1]} in quarantine")
    dropped_rows = _lines(out / "quarantine" / IMAGE_LEDGER)
    if dropped_rows != summary.images_dropped:
        raise AssertionError(f"unbalanced image ledger: {summary.images_dropped} images dropped, "
                             f"{dropped_rows} rows in {IMAGE_LEDGER}")
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    try:
        if validate:
            _validate(summary, manifest, ledger, split, limits, out)
        elif summary.quarantine_rate > max_quarantine_rate:
            raise QuarantineRateError(summary.rate_message())
    except Exception as e:
        e.summary = summary  # type: ignore[attr-defined]  (the counts, for the caller's log)
        raise
    return summary


def _recount(shards: list[str], ledger: Path) -> tuple[int, int]:
    """Samples in the written shards (their one `.json` member each) and lines of the quarantine
    ledger, counted from the files, not from the counters that wrote them."""
    import tarfile

    samples = 0
    for path in shards:
        with tarfile.open(path) as tar:
            samples += sum(m.isfile() and m.name.endswith(".json") for m in tar.getmembers())
    return samples, _lines(ledger)


def _lines(path: Path) -> int:
    """Non-blank lines of a JSONL file (0 when it does not exist)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if line.strip())


def _accept(
    cand: Candidate,
    loader: ImageLoader,
    tasks: frozenset[str],
    limits: Limits,
    seen: set[str],
    split: str,
) -> Quarantined | tuple[Sample, dict[str, Any], str, list[DroppedImage]]:
    """The sample, its manifest row, location and dropped images, or the rule the candidate
    broke. A document quarantined after losing images names them in its detail; when it
    broke ``image_count`` (no image left) the first dropped image's rule is the reason."""
    dropped: list[DroppedImage] = []
    try:
        if cand.key in seen:  # before decoding anything
            raise Reject("duplicate_key", f"key {cand.key!r} seen before")
        images, dropped = _load_images(cand, loader)
        record = drop_image_parts(cand.record, {d.index for d in dropped}) if dropped else cand.record
        sample = Sample(cand.key, images, record)
        row = check_sample(sample, tasks, limits)
    except Reject as r:
        rule, detail = r.rule, r.detail
        if dropped:
            rule = dropped[0].rule if rule == "image_count" else rule
            detail += f"; dropped {len(dropped)} image(s): " + "; ".join(d.brief() for d in dropped)
        return Quarantined(cand.key, cand.location, rule, detail, cand.raw)
    except Exception as e:  # noqa: BLE001 (hostile input must not crash the ingest)
        return Quarantined(cand.key, cand.location, "malformed_record",
                           f"{type(e).__name__}: {e}", cand.raw)
    seen.add(cand.key)
    row["split"] = split
    return sample, row, cand.location, dropped


def _load_images(cand: Candidate, loader: ImageLoader) -> tuple[list, list[DroppedImage]]:
    """The candidate's images; with ``positions`` a failing one is dropped, else it raises."""
    images, dropped = [], []
    for i, ref in enumerate(cand.images):
        try:
            images.append(loader.load(ref)[0])
        except Reject as r:
            if cand.positions is None:
                raise
            dropped.append(DroppedImage(cand.key, cand.location, cand.positions[i], ref,
                                        r.rule, r.detail, index=i))
    return images, dropped


def _validate(
    summary: IngestSummary,
    manifest: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    split: str,
    limits: Limits,
    out: Path,
) -> None:
    """Run the manifest suite (accepted records) and the ledger suite (all records)."""
    from components.data.validation import DataValidationError, validate_ledger, validate_manifest

    fmt = FORMATS[summary.format]
    source_tasks = {summary.format: fmt.tasks} if fmt.tasks else {}
    reports = {
        "ledger": validate_ledger(ledger, "ledger", read=summary.read,
                                  max_quarantine_rate=summary.max_quarantine_rate, rules=RULES)
    }
    if manifest:
        reports["manifest"] = validate_manifest(
            manifest, split, min_side=limits.min_side, max_side=limits.max_side,
            max_text_chars=limits.max_text_chars, source_tasks=source_tasks)
    summary.validation = {name: r.success for name, r in reports.items()}
    (out / "validation.json").write_text(
        json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=1))
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    failures = [f for r in reports.values() for f in r.failures]
    # the ledger's one values-in-set expectation on `status` is the threshold
    over_rate = [f for f in failures
                 if (f.expectation, f.column) == ("expect_column_values_to_be_in_set", "status")]
    others = [r.message() for r in reports.values() if not r.success
              and any(f not in over_rate for f in r.failures)]
    if others:
        raise DataValidationError("; ".join(others))
    if over_rate:
        raise QuarantineRateError(summary.rate_message())
