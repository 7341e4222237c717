"""TextVQA (``TextVQA_0.5.1_*.json``): ``data[]`` entries; image ``{image_id}.jpg`` under --images."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.data.ingest.fields import as_text, field, text
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item, file_failure, load_json, map_rows
from components.data.quarantine import Reject
from components.data.sample import assistant_turn, user_turn

FORMAT = "textvqa"
TASKS = ("vqa",)


def read(source: Path, images: Path | None) -> Iterator[Item]:
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
        counts = Counter(t for t in (as_text(a, "answers").strip() for a in raw_answers) if t)
        if not counts:
            raise Reject("empty_answer", f"question {qid!r} has no non-empty answer")
        answers = [a for a, _ in counts.most_common()]
        record = {
            "task": "vqa",
            "source": FORMAT,
            "messages": [user_turn(question, 1), assistant_turn(answers[0])],
            "answers": answers,
            "question_id": qid,
            "image_id": image_id,
        }
        ref = ImageRef(path=f"{image_id}.jpg")
        return Candidate(key, "", record, [ref])

    rows = ((f"{source}#data[{i}]", row) for i, row in enumerate(entries))
    yield from map_rows(rows, FORMAT, source.stem, mapper, ("question_id",))
