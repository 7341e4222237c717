"""Image + caption webdataset shards as published by img2dataset (LAION, CC3M, CC12M...).

Per sample ``KEY.jpg|jpeg|png|webp`` (exactly one image) with ``KEY.txt`` (the caption)
and/or ``KEY.json`` (an object with ``caption`` or ``text``, maybe ``url``, ``width``...);
other members (``.npy``, ``.cls``...) are ignored. The caption is ``KEY.txt`` when present,
else the JSON's ``caption``, else its ``text``. Each sample becomes a caption record built
as COCO's (the same prompt), keyed ``webdataset-captions-KEY``. The tar is read with
:func:`~components.data.ingest.tars.shard_items` (member by member, never extracted, its
end verified).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.coco_captions import PROMPT
from components.data.ingest.fields import as_text, sample_key
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item
from components.data.ingest.tars import TarGroup, shard_items
from components.data.ingest.webdataset import json_member
from components.data.quarantine import Reject
from components.data.sample import assistant_turn, user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "webdataset-captions"
TASKS = ("caption",)
SUFFIXES = (".tar",)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_FIELDS = ("caption", "text")
RAW_MEMBERS = ("json", "txt")  # what a quarantined sample keeps of its input


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """Caption samples of one shard in order; problems become :class:`Quarantined` items."""
    yield from shard_items(path, limits, _candidate, RAW_MEMBERS, name=_key)


def _key(member_key: str) -> str:
    return sample_key(FORMAT, member_key)


def _candidate(group: TarGroup) -> Candidate:
    members = group.members
    found = [ext for ext in members if ext.lower() in IMAGE_EXTS]
    if not found:
        raise Reject("missing_field", f"sample {group.key!r} has no image member "
                                      f"({'/'.join(IMAGE_EXTS)}); has {sorted(members)}")
    if len(found) > 1:
        raise Reject("image_count", f"sample {group.key!r} has {len(found)} image members "
                                    f"{sorted(found)}; a caption sample has one")
    meta = json_member(members["json"], "json member") if "json" in members else {}
    caption = _caption(group.key, members, meta).strip()
    record: dict[str, Any] = {
        "task": "caption",
        "source": FORMAT,
        "messages": [user_turn(PROMPT, 1), assistant_turn(caption)],
        "answers": [caption],
    }
    if isinstance(meta.get("url"), str):
        record["url"] = meta["url"]
    raw = next((members[m] for m in RAW_MEMBERS if m in members), b"")
    return Candidate(_key(group.key), group.location, record, [ImageRef(data=members[found[0]])],
                     raw)


def _caption(key: str, members: dict[str, bytes], meta: dict[str, Any]) -> str:
    """``KEY.txt``, else the JSON's first caption field."""
    if "txt" in members:
        return as_text(members["txt"], "txt member")
    for name in CAPTION_FIELDS:
        if meta.get(name) is not None:
            return as_text(meta[name], f"json member {name!r}")
    raise Reject("missing_field", f"sample {key!r} has no caption: no txt member and no "
                                  f"{' / '.join(map(repr, CAPTION_FIELDS))} in its json member")
