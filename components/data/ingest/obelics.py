"""OBELICS-style interleaved documents (parquet or JSONL): aligned ``texts`` / ``images`` lists.

Position i holds a text or an image (the other is null). A document becomes one assistant
message whose parts keep that order, so every text is a language-modelling target.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.data.ingest.fields import as_text, field
from components.data.ingest.images import ImageRef, as_image_ref
from components.data.ingest.records import Candidate, Item, input_files, map_rows, table_rows
from components.data.quarantine import Reject

FORMAT = "obelics"
TASKS = ("interleaved",)
SUFFIXES = (".parquet", ".jsonl")


def read(source: Path, images: Path | None) -> Iterator[Item]:
    for path in input_files(source, SUFFIXES):
        yield from map_rows(table_rows(path), FORMAT, path.stem, mapper)


def mapper(row: Any, key: str) -> Candidate:
    texts = field(row, "texts", list)
    cells = field(row, "images", list)
    if len(texts) != len(cells):
        raise Reject("placeholder_mismatch", f"{len(texts)} texts vs {len(cells)} image slots")
    parts: list[dict[str, Any]] = []
    refs: list[ImageRef] = []
    for i, (t, im) in enumerate(zip(texts, cells, strict=True)):
        if (t is None) == (im is None):
            raise Reject("wrong_type", f"position {i}: needs exactly one of text and image")
        if im is not None:
            refs.append(as_image_ref(im, f"images[{i}]"))
            parts.append({"type": "image"})
        elif t.strip() if isinstance(t, str) else True:
            parts.append({"type": "text", "text": as_text(t, f"texts[{i}]")})
    record = {
        "task": "interleaved",
        "source": FORMAT,
        "messages": [{"role": "assistant", "content": parts}],
    }
    return Candidate(key, "", record, refs)
