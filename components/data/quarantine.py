"""The quarantine: records that failed a rule, kept with the rule, the reason and the raw input.

A quarantine shard is a webdataset tar: per record ``__key__`` (``q-0000000``...), ``json``
(format, key, location, rule, detail; ASCII-escaped so that broken text survives) and, when
there is one, ``raw`` (the offending input bytes, capped). The same entries, without ``raw``,
go to ``quarantine.jsonl`` for people and for Great Expectations.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RULES: dict[str, str] = {
    "empty_file": "the input file is empty",
    "unreadable_file": "the input (file, JSONL line, tar entry) does not parse",
    "truncated_tar": "a tar shard ends in the middle of a member",
    "unsafe_path": "a path with '..', an absolute path, a link or a special tar member",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type",
    "invalid_utf8": "text is not valid UTF-8",
    "image_missing": "a referenced image file does not exist",
    "image_decode": "image bytes do not decode",
    "decompression_bomb": "image pixels exceed Pillow's MAX_IMAGE_PIXELS",
    "image_size": "image width or height out of range",
    "placeholder_mismatch": "number of image placeholders != number of images",
    "image_count": "fewer images than the task family needs, or images on a text task",
    "empty_answer": "an assistant turn, answer or preference reply is empty",
    "text_length": "total text length out of bounds",
    "duplicate_key": "a key seen before in this ingest",
    "unknown_task": "task not in the task registry",
    "malformed_record": "the record broke the mapping in an unforeseen way",
}
RAW_LIMIT = 1 << 20  # bytes of offending input kept per quarantined record


class Reject(Exception):
    """A record breaks ``rule`` (a key of :data:`RULES`)."""

    def __init__(self, rule: str, detail: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown quarantine rule {rule!r}; expected one of {list(RULES)}")
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class Quarantined:
    """One rejected input record and where it came from."""

    key: str
    location: str
    rule: str
    detail: str
    raw: bytes = b""


class QuarantineRateError(Exception):
    """More records were quarantined than the threshold allows."""


@dataclass(frozen=True)
class QuarantineEntry:
    """The JSON part of a quarantine shard entry."""

    format: str
    key: str
    location: str
    rule: str
    detail: str
    raw_bytes: int


def write_tar_sample(tar: tarfile.TarFile, sample: dict[str, Any]) -> None:
    """Add one webdataset sample (``__key__`` + ``ext -> bytes``) as ``key.ext`` members.

    The members match webdataset's TarWriter (mtime 0, root owner, mode 0444), written with
    the standard library: importing webdataset imports torch, seconds of start-up.
    """
    key = sample["__key__"]
    for ext, data in sample.items():
        if ext == "__key__":
            continue
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(data))


class QuarantineWriter:
    """Writes ``quarantine-0000.tar`` and ``quarantine.jsonl`` under ``out_dir``."""

    def __init__(self, out_dir: str | Path, fmt: str) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.tar_path = self.dir / "quarantine-0000.tar"
        self.ledger_path = self.dir / "quarantine.jsonl"
        self._tmp = self.tar_path.with_name(self.tar_path.name + ".tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._ledger = open(self.ledger_path, "w", encoding="ascii")  # noqa: SIM115
        self.count = 0

    def write(self, item: Quarantined) -> QuarantineEntry:
        raw = item.raw[:RAW_LIMIT]
        entry = QuarantineEntry(self.fmt, item.key, item.location, item.rule, item.detail, len(raw))
        text = json.dumps(asdict(entry))  # ensure_ascii: lone surrogates stay escaped
        sample: dict[str, Any] = {"__key__": f"q-{self.count:07d}", "json": text.encode("ascii")}
        if raw:
            sample["raw"] = raw
        write_tar_sample(self._tar, sample)
        self._ledger.write(text + "\n")
        self.count += 1
        return entry

    def close(self) -> None:
        self._tar.close()
        self._ledger.close()
        os.replace(self._tmp, self.tar_path)

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_quarantine(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a quarantine tar: the JSON fields plus ``raw`` bytes (b"" when absent)."""
    entries: dict[str, dict[str, Any]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            entry = entries.setdefault(key, {"raw": b""})
            if ext == "json":
                entry.update(json.loads(data))
            else:
                entry[ext] = data
    return list(entries.values())
