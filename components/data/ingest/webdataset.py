"""Webdataset tar shards in the data contract (``__key__`` + ``000.png``... + ``json``).

Tars are read member by member with :mod:`tarfile`, never extracted: a member with an
absolute path, a ``..`` component, or a link/device type quarantines its sample, and a
shard that ends mid-member quarantines the sample being read when it broke.
:func:`tar_groups` is that safe reading, shared with the other tar layouts
(``webdataset_captions``).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.data.ingest.fields import find_surrogate
from components.data.ingest.images import ImageRef, check_relative
from components.data.ingest.records import Candidate, Item, file_failure, guarded
from components.data.quarantine import Quarantined, Reject

FORMAT = "webdataset"
TASKS: tuple[str, ...] = ()  # any registered task: the record names it
IMAGE_ENTRY = re.compile(r"^\d{3}\.(png|jpg|jpeg|webp)$")
MAX_MEMBER_BYTES = 64 << 20


@dataclass
class TarGroup:
    """The members of one tar sample (``key.ext`` -> bytes), or why it cannot be used."""

    key: str
    location: str
    members: dict[str, bytes] = field(default_factory=dict)
    bad: Reject | None = None


Builder = Callable[[TarGroup], Candidate]


def read(source: Path, images: Path | None) -> Iterator[Item]:
    for path in shard_paths(source):
        yield from read_shard(path)


def shard_paths(source: Path) -> list[Path]:
    """``source`` itself, or the ``*.tar`` files of a folder (sorted)."""
    return sorted(source.glob("*.tar")) if source.is_dir() else [source]


def read_shard(path: Path) -> Iterator[Item]:
    """Samples of one shard in order; problems become :class:`Quarantined` items."""
    yield from shard_items(path, _candidate, raw_members=("json",))


def shard_items(path: Path, build: Builder, raw_members: tuple[str, ...],
                name: Callable[[str], str] = str) -> Iterator[Item]:
    """``build(group)`` per sample of a shard; a bad group, or a Reject ``build`` raises,
    becomes a :class:`Quarantined` keyed ``name(member key)`` holding the first present of
    ``raw_members`` as its raw input."""
    for group in tar_groups(path):
        if isinstance(group, Quarantined):
            yield group
            continue
        key = name(group.key)
        raw = next((group.members[m] for m in raw_members if m in group.members), b"")
        if group.bad is not None:
            yield Quarantined(key, group.location, group.bad.rule, group.bad.detail, raw)
        else:
            yield guarded(key, group.location, raw, lambda g=group: build(g))


def _split(name: str) -> tuple[str, str]:
    """webdataset's member naming: ``dir/key.ext`` -> (``dir/key``, ``ext``)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def tar_groups(path: Path) -> Iterator[TarGroup | Quarantined]:
    """The samples of one shard (consecutive members sharing a key), read one member at a
    time; an unusable file is one :class:`Quarantined`, a truncated one ends with a group
    marked ``truncated_tar`` (the samples before it are whole)."""
    if path.stat().st_size == 0:
        yield file_failure(path, Reject("empty_file", f"{path.name}: 0 bytes"))
        return
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as e:
        yield file_failure(path, Reject("unreadable_file", f"{path.name}: {e}"))
        return
    group: TarGroup | None = None
    with tar:
        try:
            for member in tar:
                mkey, ext = _split(member.name)
                if group is None or mkey != group.key:
                    if group is not None:
                        yield group
                    group = TarGroup(mkey, f"{path}:{mkey}")
                problem = _member_problem(member)
                if problem is not None:
                    group.bad = group.bad or problem
                    continue
                group.members[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, OSError) as e:
            key = group.key if group else None
            where = f"{path.name} after {key!r}" if key else path.name
            yield TarGroup(key or path.name, f"{path}:{key}", {},
                           Reject("truncated_tar", f"{where}: {type(e).__name__}: {e}"))
            return
    if group is not None:
        yield group


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


def _candidate(group: TarGroup) -> Candidate:
    key, location, members = group.key, group.location, group.members
    if "json" not in members:
        raise Reject("missing_field", f"sample {key!r} has no json entry (has {sorted(members)})")
    record = json_member(members["json"], "json entry")
    for name in ("task", "source"):
        if not isinstance(record.get(name), str):
            raise Reject("missing_field" if record.get(name) is None else "wrong_type",
                         f"record field {name!r}")
    images = [ImageRef(data=members[e]) for e in sorted(e for e in members if IMAGE_ENTRY.match(e))]
    return Candidate(key, location, record, images, members["json"])


def json_member(data: bytes, name: str) -> dict:
    """A tar member holding one JSON object, as valid text (else :class:`Reject`)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Reject("invalid_utf8", f"{name}: {e}") from None
    except json.JSONDecodeError as e:
        raise Reject("unreadable_file", f"{name}: {e}") from None
    if not isinstance(record, dict):
        raise Reject("wrong_type", f"{name} is {type(record).__name__}, expected an object")
    bad = find_surrogate(record)
    if bad:
        raise Reject("invalid_utf8", f"lone surrogate in {bad}")
    return record
