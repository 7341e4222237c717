"""TextVQA (``TextVQA_0.5.1_*.json``): ``data[]`` entries; image ``{image_id}.jpg`` under --images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import as_text, field, text
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item, file_failure, load_json, map_rows
from components.data.ingest.vqa import ranked_answers, vqa_record
from components.data.quarantine import Reject

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "textvqa"
TASKS = ("vqa",)
SUFFIXES = (".json",)


def read(source: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    try:
        entries = field(load_json(source), "data", list)
    except Reject as r:
        yield file_failure(source, r)
        return

    def mapper(row: Any, key: str) -> Candidate:
        qid = field(row, "question_id", (int, str))
        image_id = field(row, "image_id", str)
        question = text(row, "question").strip()
        raw_answers = field(row, "answers", list)
        answers = ranked_answers([as_text(a, "answers") for a in raw_answers])
        if not answers:
            raise Reject("empty_answer", f"question {qid!r} has no non-empty answer")
        record = vqa_record(FORMAT, question, answers, qid, image_id)
        ref = ImageRef(path=f"{image_id}.jpg")
        return Candidate(key, "", record, [ref])

    rows = ((f"{source}#data[{i}]", row) for i, row in enumerate(entries))
    yield from map_rows(rows, FORMAT, source.stem, mapper, ("question_id",))
