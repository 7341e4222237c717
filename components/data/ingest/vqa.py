"""VQAv2 and OK-VQA: a questions JSON plus an annotations JSON; one record per annotation.

``--source`` is the folder holding one ``*questions*.json`` and one ``*annotations*.json``
(read together as one input; every other file of the folder is listed as skipped, see
:func:`plan`); images are found under ``--images`` by the COCO id at the end of their file
name (``COCO_train2014_000000000009.jpg``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import as_text, field, text
from components.data.ingest.images import ImageRef
from components.data.ingest.records import Candidate, Item, file_failure, load_json, map_rows
from components.data.ingest.sources import SourceFile, classify
from components.data.quarantine import Reject
from components.data.sample import assistant_turn, user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

TASKS = ("vqa",)
SUFFIXES = (".json",)
PAIR = ("*questions*.json", "*annotations*.json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_TRAILING_ID = re.compile(r"(\d+)$")


def image_index(images: Path | None) -> dict[int, str]:
    """COCO image id (trailing digits of the file stem) -> path relative to ``images``."""
    if images is None or not images.is_dir():
        return {}
    index: dict[int, str] = {}
    for path in sorted(images.rglob("*")):
        m = _TRAILING_ID.search(path.stem)
        if m and path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(int(m.group(1)), path.relative_to(images).as_posix())
    return index


def plan(source: Path) -> list[SourceFile]:
    """The folder itself (its questions + annotations pair, read together), then every other
    file of it as skipped (counted when it looks like input: a compressed JSON...)."""
    if not source.is_dir():
        return [SourceFile(source)]
    rows = [SourceFile(source)]
    for path in sorted(source.iterdir()):
        if any(fnmatchcase(path.name, pattern) for pattern in PAIR):
            continue
        row = classify(path, SUFFIXES)
        if row.skipped is None:
            row = SourceFile(path, f"a {SUFFIXES[0]} matching neither {' nor '.join(PAIR)}")
        rows.append(row)
    return rows


def _pair(source: Path) -> tuple[Path, Path]:
    if not source.is_dir():
        raise Reject("missing_field", f"{source}: expected a folder with questions + annotations")
    found = []
    for pattern in PAIR:
        hits = sorted(source.glob(pattern))
        if len(hits) != 1:
            raise Reject("missing_field", f"{source}: {len(hits)} files match {pattern}, need 1")
        found.append(hits[0])
    return found[0], found[1]


def ranked_answers(texts: list[str], lead: str | None = None) -> list[str]:
    """Distinct non-empty answers, most frequent first (``lead``, when given, first of all)."""
    counts = Counter(t for t in (t.strip() for t in texts) if t)
    ordered = [a for a, _ in counts.most_common()]
    if lead and lead.strip():
        ordered = [lead.strip()] + [a for a in ordered if a != lead.strip()]
    return ordered


def vqa_record(source: str, question: str, answers: list[str], qid: Any, image_id: Any) -> dict:
    """A single-question VQA record of the data contract; the first answer is the target."""
    return {"task": "vqa", "source": source,
            "messages": [user_turn(question, 1), assistant_turn(answers[0])],
            "answers": answers, "question_id": qid, "image_id": image_id}


def answers_of(ann: Any) -> list[str]:
    """Distinct reference answers, most frequent first (``multiple_choice_answer`` leads)."""
    raw = field(ann, "answers", list)
    texts = [as_text(field(a, "answer", (str, bytes)), "answer") for a in raw]
    return ranked_answers(texts, text(ann, "multiple_choice_answer", optional=True))


def reader(fmt: str):
    """The reader of one VQA-style format (``vqav2`` or ``okvqa``)."""

    def read(source: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
        try:
            qpath, apath = _pair(source)
        except Reject as r:
            yield file_failure(source, r)
            return
        try:
            qrows = field(load_json(qpath), "questions", list)
        except Reject as r:
            yield file_failure(qpath, r)
            return
        try:
            anns = field(load_json(apath), "annotations", list)
        except Reject as r:
            yield file_failure(apath, r)
            return
        questions = {q.get("question_id"): q for q in qrows if isinstance(q, dict)}
        index = image_index(images)

        def mapper(ann: Any, key: str) -> Candidate:
            qid = field(ann, "question_id", (int, str))
            image_id = field(ann, "image_id", int)
            q = questions.get(qid)
            if q is None:
                raise Reject("missing_field", f"question {qid!r} not in {qpath.name}")
            question = text(q, "question").strip()
            answers = answers_of(ann)
            if not answers:
                raise Reject("empty_answer", f"question {qid!r} has no non-empty answer")
            path = index.get(image_id)
            if path is None:
                raise Reject("image_missing", f"no image for COCO id {image_id} under --images")
            record = vqa_record(fmt, question, answers, qid, image_id)
            return Candidate(key, "", record, [ImageRef(path=path)])

        rows = ((f"{apath}#annotations[{i}]", a) for i, a in enumerate(anns))
        yield from map_rows(rows, fmt, apath.stem, mapper, ("question_id",))

    return read
