"""Webdataset tar shards in the data contract (``__key__`` + ``000.png``... + ``json``).

Tars are read member by member with :mod:`tarfile`, never extracted: a member with an
absolute path, a ``..`` component, or a link/device type quarantines its sample, and a
shard that ends mid-member quarantines the sample being read when it broke.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.data.ingest.fields import find_surrogate
from components.data.ingest.images import ImageRef, check_relative
from components.data.ingest.records import Candidate, Item, file_failure, guarded
from components.data.quarantine import Quarantined, Reject

FORMAT = "webdataset"
TASKS: tuple[str, ...] = ()  # any registered task: the record names it
IMAGE_ENTRY = re.compile(r"^\d{3}\.(png|jpg|jpeg|webp)$")
MAX_MEMBER_BYTES = 64 << 20


def read(source: Path, images: Path | None) -> Iterator[Item]:
    for path in sorted(source.glob("*.tar")) if source.is_dir() else [source]:
        yield from read_shard(path)


def _split(name: str) -> tuple[str, str]:
    """webdataset's member naming: ``dir/key.ext`` -> (``dir/key``, ``ext``)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def read_shard(path: Path) -> Iterator[Item]:
    """Samples of one shard in order; problems become :class:`Quarantined` items."""
    if path.stat().st_size == 0:
        yield file_failure(path, Reject("empty_file", f"{path.name}: 0 bytes"))
        return
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as e:
        yield file_failure(path, Reject("unreadable_file", f"{path.name}: {e}"))
        return
    group: dict[str, Any] = {}
    key: str | None = None
    bad: Reject | None = None
    with tar:
        try:
            for member in tar:
                mkey, ext = _split(member.name)
                if mkey != key:
                    if key is not None:
                        yield _finish(path, key, group, bad)
                    key, group, bad = mkey, {}, None
                problem = _member_problem(member)
                if problem is not None:
                    bad = bad or problem
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                group[ext] = data
        except (tarfile.TarError, EOFError, OSError) as e:
            where = f"{path.name} after {key!r}" if key else path.name
            yield Quarantined(key or path.name, f"{path}:{key}", "truncated_tar",
                              f"{where}: {type(e).__name__}: {e}", b"")
            return
    if key is not None:
        yield _finish(path, key, group, bad)


def _member_problem(member: tarfile.TarInfo) -> Reject | None:
    try:
        check_relative(member.name)
    except Reject as r:
        return r
    if not member.isfile():
        return Reject("unsafe_path", f"member {member.name!r} is not a regular file")
    if member.size > MAX_MEMBER_BYTES:
        return Reject("image_size", f"member {member.name!r} has {member.size} bytes")
    return None


def _finish(path: Path, key: str, group: dict[str, Any], bad: Reject | None) -> Item:
    location = f"{path}:{key}"
    raw = group.get("json", b"")
    if bad is not None:
        return Quarantined(key, location, bad.rule, bad.detail, raw)
    return guarded(key, location, raw, lambda: _candidate(key, location, group))


def _candidate(key: str, location: str, group: dict[str, Any]) -> Candidate:
    if "json" not in group:
        raise Reject("missing_field", f"sample {key!r} has no json entry (has {sorted(group)})")
    try:
        record = json.loads(group["json"].decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Reject("invalid_utf8", f"json entry: {e}") from None
    except json.JSONDecodeError as e:
        raise Reject("unreadable_file", f"json entry: {e}") from None
    if not isinstance(record, dict):
        raise Reject("wrong_type", f"json entry is {type(record).__name__}, expected an object")
    bad = find_surrogate(record)
    if bad:
        raise Reject("invalid_utf8", f"lone surrogate in {bad}")
    for name in ("task", "source"):
        if not isinstance(record.get(name), str):
            raise Reject("missing_field" if record.get(name) is None else "wrong_type",
                         f"record field {name!r}")
    images = [ImageRef(data=group[e]) for e in sorted(e for e in group if IMAGE_ENTRY.match(e))]
    return Candidate(key, location, record, images, group["json"])
