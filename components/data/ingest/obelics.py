"""OBELICS-style interleaved documents (parquet or JSONL): aligned ``texts`` / ``images`` lists.

Position i holds a text or an image (the other is null). A document becomes one assistant
message whose parts keep that order, so every text is a language-modelling target.

An image cell is bytes, a ``{"bytes", "path"}`` struct, a path under ``--images``, or -- as
published OBELICS rows have -- a URL. A URL is never fetched: it is resolved to a file
directly under ``--images`` (default: the source's folder) named, in this order,

1. ``sha1(url).hexdigest()`` + the URL path's extension, lower-cased
   (``https://x.org/a/Cat.JPG?s=2`` -> ``<40 hex>.jpg``; the bare hex when there is none);
2. the URL path's last segment, percent-decoded (``Cat.JPG``; skipped when it is empty,
   ``.``/``..`` or holds a separator).

An image that cannot be used (not found, undecodable, out of the side bounds, unsafe) is
dropped *per image*: the document is kept without it, and ``quarantine/images_quarantined.jsonl``
gets one row (document key, location, position, URL, rule, detail); ``images_dropped`` in the
summary counts them. The document itself is counted once, as accepted -- or, when what is
left breaks a rule (no text at all, no image left), quarantined as a whole with the dropped
images named in its detail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import as_text, field
from components.data.ingest.images import ImageRef, as_image_ref
from components.data.ingest.records import Candidate, Item, map_rows, table_rows
from components.data.quarantine import Reject

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "obelics"
TASKS = ("interleaved",)
SUFFIXES = (".parquet", ".jsonl")


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """The rows of one JSONL or parquet file."""
    yield from map_rows(table_rows(path, limits), FORMAT, path.stem, mapper)


def mapper(row: Any, key: str) -> Candidate:
    texts = field(row, "texts", list)
    cells = field(row, "images", list)
    if len(texts) != len(cells):
        raise Reject("placeholder_mismatch", f"{len(texts)} texts vs {len(cells)} image slots")
    parts: list[dict[str, Any]] = []
    refs: list[ImageRef] = []
    positions: list[int] = []
    for i, (t, im) in enumerate(zip(texts, cells, strict=True)):
        if (t is None) == (im is None):
            raise Reject("wrong_type", f"position {i}: needs exactly one of text and image")
        if im is not None:
            refs.append(as_image_ref(im, f"images[{i}]"))
            positions.append(i)
            parts.append({"type": "image"})
        elif t.strip() if isinstance(t, str) else True:
            parts.append({"type": "text", "text": as_text(t, f"texts[{i}]")})
    record = {
        "task": "interleaved",
        "source": FORMAT,
        "messages": [{"role": "assistant", "content": parts}],
    }
    return Candidate(key, "", record, refs, positions=positions)
