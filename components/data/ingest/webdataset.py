"""Webdataset tar shards in the data contract (``__key__`` + ``000.png``... + ``json``).

A shard is read with :func:`components.data.ingest.tars.shard_items`: member by member, never
extracted, its end verified; see that module for what quarantines a sample.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from components.data.ingest.fields import find_surrogate
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item
from components.data.ingest.tars import TarGroup, shard_items
from components.data.quarantine import Reject

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "webdataset"
TASKS: tuple[str, ...] = ()  # any registered task: the record names it
SUFFIXES = (".tar",)
IMAGE_ENTRY = re.compile(r"^\d{3}\.(png|jpg|jpeg|webp)$")


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """Samples of one shard in order; problems become :class:`Quarantined` items."""
    yield from shard_items(path, limits, _candidate, raw_members=("json",))


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
