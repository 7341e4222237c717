"""External datasets a recipe names (``data.datasets``): ingested from a public layout, split
into train / val / test with no image in two splits, written as shards named after the dataset.

Each dataset is one DVC stage (``ingest@<name>``, its source files and image folder its
dependencies), so the data version covers it and an unchanged dataset is never ingested
again. The stage runs `ingest_dataset`:

1. `components.data.ingest.run.ingest` maps the source (or each of the dataset's own split
   files) to the data contract, quarantining what breaks a rule;
2. records are assigned to splits: by the dataset's own files, or by a seeded ratio over
   *groups of records that share an image* (identical image bytes), so an image never lands
   in two splits; with its own files, a later split's record that shares an image with an
   earlier split is quarantined (`split_overlap`);
3. ``OUT/{split}/<name>-NNNN.tar`` and ``OUT/manifests/{split}.jsonl`` are written (records
   keep their bytes; ``source`` becomes the dataset's name), with ``OUT/quarantine/`` and
   ``OUT/summary.json``; the mix stage copies them into ``data/shards``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.data.union_find import DisjointSets

DATASET_NAME = r"^[a-z][a-z0-9_]*$"  # a shard stem: `<name>-NNNN.tar` never matches another name
SPLIT_NAMES = ("train", "val", "test")


class DatasetSpec(BaseModel):
    """One external dataset of a recipe (``data.datasets.<name>``)."""

    model_config = ConfigDict(extra="forbid")

    format: str  # an ingest format (`vlmforge ingest --help`)
    source: str  # a file or folder of that format (relative: to the working directory)
    images: str | None = None  # the image folder (default: the source's folder)
    files: dict[str, str] | None = None  # the dataset's own split files, relative to `source`
    split: dict[str, float] | None = None  # or a seeded ratio, e.g. {train: 0.8, test: 0.2}
    seed: int = 0
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    shard_size: int = Field(500, gt=0)
    min_side: int = Field(8, gt=0)
    max_side: int = Field(4096, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> DatasetSpec:
        from components.data.ingest import FORMATS

        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; known: {list(FORMATS)}")
        if self.files is not None and self.split is not None:
            raise ValueError("give the dataset's own split `files` or a `split` ratio, not both")
        for name, table in (("files", self.files), ("split", self.split)):
            bad = sorted(set(table or {}) - set(SPLIT_NAMES))
            if bad:
                raise ValueError(f"{name}: unknown splits {bad}; expected some of {list(SPLIT_NAMES)}")
        if self.files is not None and not self.files:
            raise ValueError("files: name at least one split file")
        if self.split is not None:
            if any(v < 0 for v in self.split.values()) or abs(sum(self.split.values()) - 1) > 1e-6:
                raise ValueError(f"split ratios must be >= 0 and sum to 1, got {self.split}")
        return self

    def ratios(self) -> dict[str, float]:
        """The seeded split ratio (everything in train unless the recipe says otherwise)."""
        return self.split if self.split is not None else {"train": 1.0}

    def resolved(self, base: Path) -> DatasetSpec:
        """Absolute ``source`` and ``images`` (relative ones against ``base``); ``images``
        defaults to the source folder (or the source file's folder)."""
        source = (base / Path(self.source).expanduser()).resolve()
        if self.images is not None:
            images = (base / Path(self.images).expanduser()).resolve()
        else:
            images = source if source.is_dir() else source.parent
        return self.model_copy(update={"source": str(source), "images": str(images)})


def ingest_dataset(name: str, spec: DatasetSpec, out: Path) -> dict[str, Any]:
    """Ingest, split and shard one dataset into ``out`` (replaced); returns its summary.

    Everything is written into a staging folder beside ``out`` and moved into place at the
    end (``ingest.output.replace_dir``): a failure or an interruption at any point -- what
    `ingest` raises (the quarantine rate over its threshold, a failed Great Expectations
    suite), or anything later -- leaves the previous ``out`` as it was."""
    from components.data.ingest.checks import Limits
    from components.data.ingest.output import replace_dir, restore
    from components.data.ingest.run import ingest

    out = Path(out)
    restore(out)  # an `out` lost between the two renames of an interrupted run
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    result = staging / "result"  # the new `out`, renamed into place once complete
    limits = Limits(min_side=spec.min_side, max_side=spec.max_side)
    parts = ({split: Path(spec.source) / spec.files[split] for split in SPLIT_NAMES
              if split in spec.files} if spec.files else {"all": Path(spec.source)})
    summaries = {}
    try:
        for part, source in parts.items():
            summaries[part] = ingest(spec.format, source, staging / part, spec.images,
                                     split="train" if part == "all" else part, limits=limits,
                                     shard_size=spec.shard_size,
                                     max_quarantine_rate=spec.max_quarantine_rate)
        records = {part: list(_records(staging / part)) for part in parts}
        assigned, overlaps = (_by_files(records) if spec.files
                              else (_by_ratio(records["all"], spec.ratios(), spec.seed), []))
        counts = _write(name, assigned, result, spec.shard_size)
        quarantined = _write_quarantine(result / "quarantine", staging, parts, overlaps)
        rules = Counter()
        for s in summaries.values():
            rules.update(s.rules)
        rules.update(Counter(o["rule"] for o in overlaps))
        read = sum(s.read for s in summaries.values())
        summary = {"dataset": name, "format": spec.format, "source": spec.source,
                   "read": read, "accepted": sum(counts.values()), "quarantined": quarantined,
                   "rules": dict(sorted(rules.items())), "splits": counts,
                   "images_dropped": sum(s.images_dropped for s in summaries.values()),
                   "quarantine_rate": round(quarantined / max(1, read), 6)}
        if summary["accepted"] + summary["quarantined"] != summary["read"]:
            raise AssertionError(f"dataset {name!r}: unbalanced: read {summary['read']}, "
                                 f"accepted {summary['accepted']}, quarantined "
                                 f"{summary['quarantined']}")
        (result / "summary.json").write_text(json.dumps(summary, indent=1))
        replace_dir(result, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


class _Record:
    """One accepted sample as its tar members, its manifest row and its image hashes."""

    def __init__(self, key: str, members: dict[str, bytes], row: dict[str, Any]):
        self.key, self.members, self.row = key, members, row
        self.images = sorted(hashlib.sha1(data).hexdigest() for ext, data in members.items()
                             if ext != "json")


def _records(folder: Path):
    """The accepted samples an `ingest` wrote to ``folder``, in shard order."""
    rows = {}
    manifest = folder / "manifest.jsonl"
    for line in manifest.read_text(encoding="utf-8").splitlines() if manifest.exists() else []:
        row = json.loads(line)
        rows[row["key"]] = row
    for shard in sorted((folder / "shards").glob("*.tar")):
        groups: dict[str, dict[str, bytes]] = defaultdict(dict)
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                groups[key][ext] = tar.extractfile(member).read()
        for key, members in groups.items():
            yield _Record(key, members, rows[key])


def _by_files(records: dict[str, list[_Record]]) -> tuple[dict[str, list[_Record]], list[dict]]:
    """Each record in its own file's split, except a record sharing an image with an earlier
    split (train, then val, then test): quarantined as `split_overlap`."""
    seen: dict[str, str] = {}
    assigned: dict[str, list[_Record]] = {}
    overlaps = []
    for split in SPLIT_NAMES:
        kept = []
        for record in records.get(split, []):
            earlier = next((seen[h] for h in record.images if seen.get(h, split) != split), None)
            if earlier is not None:
                overlaps.append({"key": record.key, "location": f"{split} split file",
                                 "rule": "split_overlap",
                                 "detail": f"an image of this record is in the {earlier} split"})
                continue
            kept.append(record)
        for record in kept:
            seen.update(dict.fromkeys(record.images, split))
        assigned[split] = kept
    return assigned, overlaps


def _by_ratio(records: list[_Record], ratios: dict[str, float], seed: int) -> dict[str, list[_Record]]:
    """Records that share an image form one group (union-find); each group goes to a split
    drawn from a seeded hash of its first image, so the assignment is stable across runs."""
    sets = DisjointSets()
    for record in records:
        anchors = record.images or [f"key:{record.key}"]
        for h in anchors[1:]:
            sets.union(h, anchors[0])
    assigned: dict[str, list[_Record]] = {split: [] for split in ratios}
    for record in records:
        group = sets.find((record.images or [f"key:{record.key}"])[0])
        draw = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:15], 16) / 16**15
        total = 0.0
        chosen = next(iter(ratios))
        for split, ratio in ratios.items():
            total += ratio
            chosen = split
            if draw < total:
                break
        assigned[chosen].append(record)
    return assigned


def _write(name: str, assigned: dict[str, list[_Record]], out: Path, shard_size: int) -> dict[str, int]:
    """Shards and manifests per split; every record's ``source`` becomes the dataset's name."""
    from components.data.manifest import write_manifest
    from components.data.shards import shard_name, write_members

    counts = {}
    for split in SPLIT_NAMES:
        records = assigned.get(split, [])
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for start in range(0, len(records), shard_size):
            shard = shard_name(name, start // shard_size)
            chunk = records[start : start + shard_size]
            entries = []
            for record in chunk:
                data = json.loads(record.members["json"])
                data["source"] = name
                members = {**record.members, "json": json.dumps(data, ensure_ascii=False).encode()}
                entries.append((record.key, members))
                rows.append({**record.row, "split": split, "source": name, "shard": shard})
            write_members(entries, out / split / shard)
        write_manifest(rows, out / "manifests" / f"{split}.jsonl")
        counts[split] = len(records)
    return counts


def _write_quarantine(out: Path, staging: Path, parts: dict[str, Path], overlaps: list[dict]) -> int:
    """One quarantine ledger for the dataset (every part's, plus the split overlaps) and the
    parts' quarantine tars with the raw inputs; returns the number of quarantined records."""
    out.mkdir(parents=True, exist_ok=True)
    from components.data.ingest.run import IMAGE_LEDGER

    lines, images = [], []
    for part in parts:
        folder = staging / part / "quarantine"
        for name, rows in (("quarantine.jsonl", lines), (IMAGE_LEDGER, images)):
            if (folder / name).exists():
                rows += [line for line in (folder / name).read_text().splitlines() if line.strip()]
        for tar in folder.glob("*.tar"):
            shutil.copyfile(tar, out / f"{part}-{tar.name}")
    lines += [json.dumps(o) for o in overlaps]
    (out / "quarantine.jsonl").write_text("".join(line + "\n" for line in lines))
    (out / IMAGE_LEDGER).write_text("".join(line + "\n" for line in images))
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    """The DVC stage `ingest@<name>`: the dataset named in params.yaml's ``data.datasets``."""
    import yaml

    parser = argparse.ArgumentParser(prog="python -m components.data.datasets", description=__doc__)
    parser.add_argument("--params", required=True, help="params.yaml with a data.datasets section")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    datasets = (yaml.safe_load(Path(args.params).read_text()).get("data") or {}).get("datasets") or {}
    if args.dataset not in datasets:
        raise SystemExit(f"dataset {args.dataset!r} not in {args.params} (have {sorted(datasets)})")
    spec = DatasetSpec.model_validate(datasets[args.dataset])
    try:
        summary = ingest_dataset(args.dataset, spec, Path(args.out))
    except Exception as e:  # noqa: BLE001 - one line for the data stage's error message
        raise SystemExit(f"dataset {args.dataset!r}: {type(e).__name__}: {e}") from e
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
