"""COCO captions (``captions_*.json``): one record per annotation, image from ``images[].file_name``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import field, text
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item, file_failure, load_json, map_rows
from components.data.quarantine import Reject
from components.data.sample import assistant_turn, user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "coco-captions"
TASKS = ("caption",)
SUFFIXES = (".json",)
PROMPT = "Describe the image."


def read(source: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    try:
        data = load_json(source)
        anns = field(data, "annotations", list)
        files = {
            img.get("id"): img.get("file_name")
            for img in field(data, "images", list)
            if isinstance(img, dict)
        }
    except Reject as r:
        yield file_failure(source, r)
        return

    def mapper(ann: Any, key: str) -> Candidate:
        field(ann, "id", (int, str))
        image_id = field(ann, "image_id", (int, str))
        caption = text(ann, "caption").strip()
        file_name = files.get(image_id)
        if file_name is None:
            raise Reject("missing_field", f"image_id {image_id!r} not in 'images'")
        if not isinstance(file_name, str):
            raise Reject("wrong_type", f"file_name of image {image_id!r} is not a string")
        record = {
            "task": "caption",
            "source": FORMAT,
            "messages": [user_turn(PROMPT, 1), assistant_turn(caption)],
            "answers": [caption],
            "image_id": image_id,
        }
        return Candidate(key, "", record, [ImageRef(path=file_name)])

    rows = ((f"{source}#annotations[{i}]", ann) for i, ann in enumerate(anns))
    yield from map_rows(rows, FORMAT, source.stem, mapper)
