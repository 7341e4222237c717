"""LLaVA-instruct JSON: ``[{id, image?, conversations: [{from: human|gpt, value}]}]``.

Each ``<image>`` in a turn becomes an image placeholder at that position; ``image`` is a
path under --images (or a list of paths). Placeholders and images must match in number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import as_text, field
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item, file_failure, load_json, map_rows
from components.data.quarantine import Reject

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "llava"
TASKS = ("instruct",)
SUFFIXES = (".json",)
IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def turn(role: str, value: str) -> dict[str, Any]:
    """A chat message; each ``<image>`` becomes an image part where it stood."""
    content: list[dict[str, Any]] = []
    for i, piece in enumerate(value.split(IMAGE_TOKEN)):
        if i:
            content.append({"type": "image"})
        piece = piece.strip()
        if piece:
            content.append({"type": "text", "text": piece})
    return {"role": role, "content": content}


def read(source: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    try:
        rows = field({"rows": load_json(source)}, "rows", list)
    except Reject as r:
        yield file_failure(source, r)
        return

    def mapper(row: Any, key: str) -> Candidate:
        image = field(row, "image", (str, list), optional=True)
        paths = [] if image is None else [image] if isinstance(image, str) else image
        refs = [ImageRef(path=field({"image": p}, "image", str)) for p in paths]
        messages = []
        for i, conv in enumerate(field(row, "conversations", list)):
            speaker = field(conv, "from", str)
            if speaker not in ROLES:
                raise Reject("wrong_type", f"conversations[{i}].from is {speaker!r}")
            value = as_text(field(conv, "value", (str, bytes)), f"conversations[{i}].value")
            messages.append(turn(ROLES[speaker], value))
        if not messages:
            raise Reject("missing_field", "empty 'conversations'")
        answers = [m for m in messages if m["role"] == "assistant"]
        record = {"task": "instruct", "source": FORMAT, "messages": messages}
        if answers:
            record["answers"] = ["".join(p.get("text", "") for p in answers[-1]["content"])]
        return Candidate(key, "", record, refs)

    yield from map_rows(((f"{source}[{i}]", r) for i, r in enumerate(rows)), FORMAT, source.stem,
                        mapper)
