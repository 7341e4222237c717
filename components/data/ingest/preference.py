"""Preference JSONL (RLAIF-V-like): ``{prompt | question, chosen, rejected, image?, id?}``.

``image`` is a path under --images (or the JSONL's folder); a missing image means a
text-only pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import field, text
from components.data.ingest.images import as_image_ref
from components.data.ingest.records import Candidate, Item, map_rows, table_rows
from components.data.sample import user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "preference"
TASKS = ("preference",)
SUFFIXES = (".jsonl", ".parquet")


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """The rows of one JSONL or parquet file."""
    yield from map_rows(table_rows(path, limits), FORMAT, path.stem, mapper, ("id", "idx"))


def mapper(row: Any, key: str) -> Candidate:
    name = "prompt" if isinstance(row, dict) and "prompt" in row else "question"
    prompt = text(row, name).strip()
    chosen = text(row, "chosen").strip()
    rejected = text(row, "rejected").strip()
    image = field(row, "image", (str, bytes, dict), optional=True)
    refs = [] if image is None else [as_image_ref(image, "image")]
    record = {
        "task": "preference",
        "source": FORMAT,
        "messages": [user_turn(prompt, len(refs))],
        "chosen": chosen,
        "rejected": rejected,
        "answers": [chosen],
    }
    return Candidate(key, "", record, refs)
