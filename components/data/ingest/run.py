"""Drive one format reader: check every record, write accepted ones to webdataset shards and
the rest to the quarantine, validate both with Great Expectations, return the counts.

Output layout under ``out``: ``shards/{format}-0000.tar``..., ``manifest.jsonl`` (accepted),
``quarantine/quarantine-0000.tar`` + ``quarantine.jsonl`` + ``files.jsonl``,
``validation.json`` and ``summary.json``. Every record read ends in exactly one of the two:
accepted + quarantined == read, counted again from the written files (shards, quarantine
ledger, files ledger) before anything is published, and checked by the ledger suite.

Files. The source is planned by its format (``Format.inputs``: the file, or every file of
the folder) and read one input at a time under a guard: a reader that raises quarantines
that input as one record (the exception's type and message) and the next input is read.
Each file gets one row in ``quarantine/files.jsonl``: ``read`` (its counts), ``stopped``
(its reading ended early -- a reader exception, a tar that stopped being whole -- with where
and why) or ``skipped`` (why). A skipped file that looks like input (compressed, suffix in
another case) is also one quarantined record, rule ``skipped_file``; other skipped files
(unknown suffix, sub-folders, sidecars) are listed only (``sources.py``).

Records. Every step of a record -- mapping, checks, image loading, caps, its shard write --
runs under the per-record guard: whatever it breaks quarantines that record and the ingest
goes on. A shard entry is written whole or not at all (``TarAppender``).

Publishing. Everything is written into ``.OUT.partial`` beside ``out`` and moved into place at
the end (``output.py``): an ingest that crashes or is interrupted leaves the previous ``out``
as it was. One that completes but fails its gate (the quarantine rate, a Great Expectations
suite) is moved to ``OUT.rejected`` instead, for inspection, and raises.

Images a document may lose (a Candidate with ``positions``: OBELICS) are the one exception
to "a failure quarantines the record": such an image is dropped, the document kept (counted
once, as accepted) and the image gets a row of its own in
``quarantine/images_quarantined.jsonl``, counted by ``images_dropped`` -- never in the record
ledger, so no document is counted twice.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.data.ingest import FORMATS
from components.data.ingest.checks import Limits, check_sample
from components.data.ingest.fields import bounded_key, find_surrogate
from components.data.ingest.images import ImageLoader, ImageRef
from components.data.ingest.output import begin, check_replaceable, discard, rejected, replace_dir
from components.data.ingest.records import Candidate, Item, drop_image_parts
from components.data.ingest.sources import SourceFile
from components.data.manifest import write_manifest
from components.data.quarantine import (
    RULES,
    Quarantined,
    QuarantineRateError,
    QuarantineWriter,
    Reject,
    TarAppender,
    open_tar,
    tar_blob,
    tar_members,
)
from components.data.sample import Sample
from components.data.shards import sample_to_wds

MAX_EXAMPLES = 3
MAX_LISTED = 50  # files named in the summary per status; files.jsonl has them all
IMAGE_LEDGER = "images_quarantined.jsonl"
FILE_LEDGER = "files.jsonl"


@dataclass
class IngestSummary:
    """Counts of one ingest; ``rules`` counts quarantined records per broken rule;
    ``images_dropped`` counts images left out of accepted documents (by rule in
    ``images_dropped_rules``), one row each in ``quarantine/images_quarantined.jsonl``;
    ``files`` counts the source's files by status and names the stopped and skipped ones
    (every file has its row in ``quarantine/files.jsonl``)."""

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
    files: dict[str, Any] = field(default_factory=dict)
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


@dataclass
class FileRow:
    """One file (or folder read whole) of the source in ``files.jsonl``."""

    path: str
    status: str  # read | stopped | skipped
    reason: str | None = None  # stopped: where and why; skipped: why
    read: int = 0
    accepted: int = 0
    quarantined: int = 0

    def stop(self, reason: str) -> None:
        self.status, self.reason = "stopped", reason


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


@dataclass(frozen=True)
class Accepted:
    """A candidate that passed every check, not yet written."""

    sample: Sample
    row: dict[str, Any]
    location: str
    dropped: list[DroppedImage]
    raw: bytes


class ShardSink:
    """Writes samples to ``{stem}-0000.tar``, ``{stem}-0001.tar``... of ``size`` samples each;
    a sample is encoded before anything is written, and written whole or not at all."""

    def __init__(self, out_dir: Path, stem: str, size: int) -> None:
        self.dir, self.stem, self.size = out_dir, stem, size
        self.paths: list[Path] = []
        self._n = 0
        self._tar: TarAppender | None = None

    def write(self, sample: Sample) -> str:
        """Append ``sample``; returns its shard's file name (raises with the shard unchanged)."""
        blob = tar_blob(sample_to_wds(sample))
        if self._tar is None or self._n == self.size:
            self._close()
            self.paths.append(self.dir / f"{self.stem}-{len(self.paths):04d}.tar")
            self._tar = TarAppender(self.paths[-1])
            self._n = 0
        self._tar.write(blob)
        self._n += 1
        return self.paths[-1].name

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def close(self) -> list[Path]:
        self._close()
        return self.paths


def safe_items(items: Iterator[Item], path: Path, row: FileRow) -> Iterator[Item]:
    """Items of one input; a reader that raises becomes one last quarantined record naming
    the exception, and the input's row says where it stopped."""
    try:
        yield from items
    except Exception as e:  # noqa: BLE001 (hostile input must not crash the ingest)
        rule = "unreadable_file" if isinstance(e, OSError) else "malformed_record"
        row.stop(f"the reader raised after {row.read} record(s): {type(e).__name__}: {e}")
        yield Quarantined(path.name, str(path), rule, row.reason or "")


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
    """Ingest ``source`` in format ``fmt`` into ``out`` (replaced only by a run that passes).

    Raises :class:`QuarantineRateError` when more than ``max_quarantine_rate`` of the records
    were quarantined, and :class:`~components.data.validation.DataValidationError` when a GE
    suite fails otherwise -- after writing everything to ``OUT.rejected`` (``summary.out``;
    the summary rides on the error as ``.summary``), ``out`` left as it was.
    """
    if not 0 <= max_quarantine_rate <= 1:
        raise ValueError(f"max_quarantine_rate must be in [0, 1], got {max_quarantine_rate}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    start = time.perf_counter()
    limits = limits or Limits()
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"--source {source} does not exist")
    for folder in (out, rejected(out)):
        check_replaceable(folder)
    work = begin(out)
    try:
        run = _Run(fmt, source, images and Path(images), work, limits, split)
        run.read(source, shard_size)
        summary = run.summary(str(source), max_quarantine_rate)
        failures = _gate(summary, run, validate, work)
        target = rejected(out) if failures else out
        summary.out = str(target)
        summary.shards = [str(target / "shards" / p.name) for p in run.shard_paths]
        summary.seconds = round(time.perf_counter() - start, 3)
        (work / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
        replace_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not failures:
        discard(rejected(out))
        return summary
    error = failures(summary)
    error.summary = summary  # type: ignore[attr-defined]  (the counts, for the caller's log)
    raise error


class _Run:
    """One ingest's reading and writing into ``work``: every input, every record."""

    def __init__(self, fmt: str, source: Path, images: Path | None, work: Path,
                 limits: Limits, split: str) -> None:
        from components.data.validation import known_tasks

        self.fmt, self.limits, self.split, self.work, self.images = fmt, limits, split, work, images
        root = images if images is not None else (source if source.is_dir() else source.parent)
        self.loader = ImageLoader(root, limits.min_side, limits.max_side, limits.max_member_bytes)
        self.tasks = frozenset(known_tasks())
        self.manifest: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.files: list[FileRow] = []
        self.seen: set[str] = set()
        self.rules: Counter[str] = Counter()
        self.image_rules: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.shard_paths: list[Path] = []

    def read(self, source: Path, shard_size: int) -> None:
        """Read every input of ``source``; write the shards, the quarantine and the ledgers."""
        work = self.work
        (work / "shards").mkdir(parents=True)
        self.sink = ShardSink(work / "shards", self.fmt, shard_size)
        with (QuarantineWriter(work / "quarantine", self.fmt) as self.quarantine,
              open(work / "quarantine" / IMAGE_LEDGER, "w", encoding="ascii") as self.image_ledger):
            for entry in FORMATS[self.fmt].inputs(source):
                self._read_input(entry)
        self.shard_paths = self.sink.close()
        write_manifest(self.manifest, work / "manifest.jsonl")
        _write_jsonl(work / "quarantine" / FILE_LEDGER, [asdict(f) for f in self.files])

    def _read_input(self, entry: SourceFile) -> None:
        row = FileRow(str(entry.path), "read" if entry.skipped is None else "skipped",
                      entry.skipped)
        self.files.append(row)
        if entry.skipped is not None:
            if entry.counted:
                self._take(Quarantined(entry.path.name, str(entry.path), "skipped_file",
                                       f"{entry.path.name}: {entry.skipped}"), row)
            return
        items = FORMATS[self.fmt].read(entry.path, self.images, self.limits)
        for item in safe_items(items, entry.path, row):
            self._take(item, row)

    def _take(self, item: Item, row: FileRow) -> None:
        """Count one record of ``row``'s input into the shards or the quarantine."""
        row.read += 1
        if isinstance(item, Candidate):
            item = _accept(item, self.loader, self.tasks, self.limits, self.seen, self.split)
        if isinstance(item, Accepted):
            item = self._write(item)
        if isinstance(item, Quarantined):
            self._quarantine(item, row)
        else:
            row.accepted += 1

    def _write(self, acc: Accepted) -> Quarantined | None:
        """Write an accepted sample's shard entry; a failure quarantines it (shard unchanged)."""
        try:
            acc.row["shard"] = self.sink.write(acc.sample)
        except Exception as e:  # noqa: BLE001 (one record's failure must not end the ingest)
            return Quarantined(acc.sample.key, acc.location, "unwritable_record",
                               f"shard entry not written: {type(e).__name__}: {e}", acc.raw)
        self.seen.add(acc.sample.key)
        for d in acc.dropped:  # ASCII-escaped, like quarantine.jsonl
            self.image_ledger.write(json.dumps(d.row(self.fmt)) + "\n")
            self.image_rules[d.rule] += 1
        self.manifest.append(acc.row)
        self.ledger.append({"key": acc.sample.key, "location": acc.location,
                            "status": "accepted", "rule": None})
        return None

    def _quarantine(self, item: Quarantined, row: FileRow) -> None:
        self.quarantine.write(item)
        row.quarantined += 1
        if item.rule == "truncated_tar":
            row.stop(item.detail)
        self.rules[item.rule] += 1
        examples = self.examples.setdefault(item.rule, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(item.key)
        self.ledger.append({"key": item.key, "location": item.location,
                            "status": "quarantined", "rule": item.rule})

    def summary(self, source: str, max_quarantine_rate: float) -> IngestSummary:
        """The counts, checked against a recount of the written files (AssertionError when
        they differ: a bug, and nothing is published); ``out`` is set once it is known."""
        s = IngestSummary(self.fmt, source, "", max_quarantine_rate=max_quarantine_rate)
        s.read = len(self.ledger)
        s.accepted, s.quarantined = len(self.manifest), self.quarantine.count
        s.rules = dict(sorted(self.rules.items()))
        s.examples = self.examples
        s.images_dropped = sum(self.image_rules.values())
        s.images_dropped_rules = dict(sorted(self.image_rules.items()))
        s.files = _files_section(self.files)
        s.quarantine_rate = round(s.quarantined / s.read, 6) if s.read else 0.0
        _recount(self.work, self.shard_paths, s)
        return s


def _files_section(files: list[FileRow]) -> dict[str, Any]:
    """Files by status, with the stopped and skipped ones named (the first MAX_LISTED)."""
    by = Counter(f.status for f in files)
    stopped = [{"path": f.path, "reason": f.reason} for f in files if f.status == "stopped"]
    skipped = [{"path": f.path, "reason": f.reason, "quarantined": bool(f.quarantined)}
               for f in files if f.status == "skipped"]
    return {"read": by["read"] + by["stopped"], "stopped": by["stopped"],
            "skipped": by["skipped"], "stopped_files": stopped[:MAX_LISTED],
            "skipped_files": skipped[:MAX_LISTED], "ledger": f"quarantine/{FILE_LEDGER}"}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _recount(work: Path, shards: list[Path], s: IngestSummary) -> None:
    """Samples in the written shards, lines of the quarantine ledger and the files ledger's
    sums, counted from the files, not from the counters that wrote them."""
    samples = sum(_shard_samples(p) for p in shards)
    quarantined = _lines(work / "quarantine" / "quarantine.jsonl")
    files = [json.loads(line) for line in _open_lines(work / "quarantine" / FILE_LEDGER)]
    by_file = tuple(sum(f[k] for f in files) for k in ("read", "accepted", "quarantined"))
    if (samples, quarantined) != (s.accepted, s.quarantined) or samples + quarantined != s.read \
            or by_file != (s.read, s.accepted, s.quarantined):
        raise AssertionError(f"unbalanced ingest: read {s.read}, but the output holds {samples} "
                             f"samples in shards and {quarantined} in quarantine; by file "
                             f"(read, accepted, quarantined) = {by_file}")
    dropped_rows = _lines(work / "quarantine" / IMAGE_LEDGER)
    if dropped_rows != s.images_dropped:
        raise AssertionError(f"unbalanced image ledger: {s.images_dropped} images dropped, "
                             f"{dropped_rows} rows in {IMAGE_LEDGER}")


def _shard_samples(path: Path) -> int:
    """Samples (one ``.json`` member each) of a shard this ingest wrote, its end verified."""
    with open_tar(path) as tar:
        return sum(m.name.endswith(".json") for m in tar_members(tar, path.stat().st_size))


def _open_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, encoding="ascii") as f:
        return [line for line in f if line.strip()]


def _lines(path: Path) -> int:
    """Non-blank lines of a JSONL file (0 when it does not exist)."""
    return len(_open_lines(path))


def _accept(
    cand: Candidate,
    loader: ImageLoader,
    tasks: frozenset[str],
    limits: Limits,
    seen: set[str],
    split: str,
) -> Quarantined | Accepted:
    """The checked sample, its manifest row, location and dropped images, or the rule the
    candidate broke. A document quarantined after losing images names them in its detail;
    when it broke ``image_count`` (no image left) the first dropped image's rule is the reason."""
    dropped: list[DroppedImage] = []
    key = bounded_key(cand.key)
    try:
        _check_key(key, seen)
        over = limits.over("max_images_per_record", len(cand.images), "record images")
        if over:
            raise Reject("over_limit", over)
        images, dropped = _load_images(cand, loader, limits)
        record = drop_image_parts(cand.record, {d.index for d in dropped}) if dropped else cand.record
        sample = Sample(key, images, record)
        row = check_sample(sample, tasks, limits)
    except Reject as r:
        rule, detail = r.rule, r.detail
        if dropped:
            rule = dropped[0].rule if rule == "image_count" else rule
            detail += f"; dropped {len(dropped)} image(s): " + "; ".join(d.brief() for d in dropped)
        return Quarantined(key, cand.location, rule, detail, cand.raw)
    except Exception as e:  # noqa: BLE001 (hostile input must not crash the ingest)
        return Quarantined(key, cand.location, "malformed_record",
                           f"{type(e).__name__}: {e}", cand.raw)
    row["split"] = split
    return Accepted(sample, row, cand.location, dropped, cand.raw)


def _check_key(key: str, seen: set[str]) -> None:
    if find_surrogate(key):
        raise Reject("invalid_utf8", f"key {key!r} holds undecodable bytes")
    if key in seen:  # before decoding anything
        raise Reject("duplicate_key", f"key {key!r} seen before")


def _load_images(cand: Candidate, loader: ImageLoader,
                 limits: Limits) -> tuple[list, list[DroppedImage]]:
    """The candidate's images; with ``positions`` a failing one is dropped, else it raises.
    The record's input bytes (row + images) over ``max_record_bytes`` quarantine it whole."""
    images, dropped = [], []
    total = len(cand.raw)
    for i, ref in enumerate(cand.images):
        try:
            image, data = loader.load(ref)
        except Reject as r:
            if cand.positions is None:
                raise
            dropped.append(DroppedImage(cand.key, cand.location, cand.positions[i], ref,
                                        r.rule, r.detail, index=i))
            continue
        total += len(data)
        over = limits.over("max_record_bytes", total, "record bytes (row + images)")
        if over:
            raise Reject("over_limit", over)
        images.append(image)
    return images, dropped


ErrorOf = Callable[[IngestSummary], Exception]


def _gate(summary: IngestSummary, run: _Run, validate: bool, work: Path) -> ErrorOf | None:
    """Run the suites (writing ``validation.json``); None when the ingest passes, else a
    function building its error from the final summary (which names where it lies)."""
    from components.data.validation import DataValidationError

    over_rate, others = (_validate(summary, run, work) if validate
                         else (summary.quarantine_rate > summary.max_quarantine_rate, []))
    if others:
        return lambda s: DataValidationError("; ".join(others))
    if over_rate:
        return lambda s: QuarantineRateError(s.rate_message())
    return None


def _validate(summary: IngestSummary, run: _Run, work: Path) -> tuple[bool, list[str]]:
    """The manifest suite (accepted records) and the ledger suite (all records): whether the
    rate alone is over the threshold, and the other failures' messages."""
    from components.data.validation import validate_ledger, validate_manifest

    fmt = FORMATS[summary.format]
    source_tasks = {summary.format: fmt.tasks} if fmt.tasks else {}
    limits = run.limits
    reports = {
        "ledger": validate_ledger(run.ledger, "ledger", read=summary.read,
                                  max_quarantine_rate=summary.max_quarantine_rate, rules=RULES)
    }
    if run.manifest:
        reports["manifest"] = validate_manifest(
            run.manifest, run.split, min_side=limits.min_side, max_side=limits.max_side,
            max_text_chars=limits.max_text_chars, source_tasks=source_tasks)
    summary.validation = {name: r.success for name, r in reports.items()}
    (work / "validation.json").write_text(
        json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=1))
    failures = [f for r in reports.values() for f in r.failures]
    # the ledger's one values-in-set expectation on `status` is the threshold
    over_rate = [f for f in failures
                 if (f.expectation, f.column) == ("expect_column_values_to_be_in_set", "status")]
    others = [r.message() for r in reports.values() if not r.success
              and any(f not in over_rate for f in r.failures)]
    return bool(over_rate), others

