"""The Cauldron (parquet): ``images`` (list) and ``texts: [{user, assistant, source?}]``.

All images go before the first user text, as in the Cauldron's own chat rendering.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import field, text
from components.data.ingest.images import as_image_ref
from components.data.ingest.records import Candidate, Item, map_rows, table_rows
from components.data.quarantine import Reject
from components.data.sample import assistant_turn, user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "cauldron"
TASKS = ("instruct",)
SUFFIXES = (".parquet", ".jsonl")


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """The rows of one JSONL or parquet file."""
    yield from map_rows(table_rows(path, limits), FORMAT, path.stem, mapper)


def mapper(row: Any, key: str) -> Candidate:
    cells = field(row, "images", list, optional=True) or []
    refs = [as_image_ref(im, f"images[{i}]") for i, im in enumerate(cells)]
    turns = field(row, "texts", list)
    if not turns:
        raise Reject("missing_field", "empty 'texts'")
    messages = []
    for i, t in enumerate(turns):
        messages.append(user_turn(text(t, "user").strip(), len(refs) if i == 0 else 0))
        messages.append(assistant_turn(text(t, "assistant").strip()))
    first = turns[0]
    record = {"task": "instruct", "source": FORMAT, "messages": messages,
              "answers": [messages[-1]["content"][0]["text"]]}
    origin = first.get("source") if isinstance(first, dict) else None
    if isinstance(origin, str):
        record["subset"] = origin
    return Candidate(key, "", record, refs)
