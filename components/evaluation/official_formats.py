"""Loaders for official benchmark files, checked record by record.

* VQA annotations: VQAv2 / OK-VQA ``{"annotations": [{"question_id", "question_type",
  "answer_type", "answers": [{"answer", "answer_id"}, ...]}]}`` or TextVQA's own
  ``{"data": [{"question_id", "question", "image_id", "answers": ["...", ...]}]}``, which is
  converted to the VQAv2 shape (``answer_id`` 1.., both types ``"unknown"``).
* VQA questions ``{"questions": [{"question_id", "image_id", "question"}]}`` and results
  ``[{"question_id", "answer"}]``.
* COCO captions ``{"annotations": [{"image_id", "caption"}]}`` and results
  ``[{"image_id", "caption"}]``.
* Multiple choice items, JSONL: ``{"question", "options": [...], "answer": "B" | 1,
  "image"?, "id"?}`` (id defaults to the item's 0-based position), and MCQ results, a JSON
  array (or ``.jsonl``) of ``{"id", "answer"}``. MMBench TSV and ScienceQA items:
  :mod:`components.evaluation.mcq_formats`.

Each ``load_*`` reads a file; the matching ``check_*`` validates data already in memory.
Every rule broken raises :class:`FormatError` naming the source, the record and the rule.
Unlike the official tools, a duplicate result is an error, not "last one wins".
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FormatError",
    "MCQItem",
    "check_caption_annotations",
    "check_caption_results",
    "check_mcq_items",
    "check_vqa_annotations",
    "check_vqa_questions",
    "check_vqa_results",
    "letter",
    "load_caption_annotations",
    "load_caption_results",
    "load_mcq_items",
    "load_mcq_results",
    "load_vqa_annotations",
    "load_vqa_questions",
    "load_vqa_results",
    "read_json",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNKNOWN_TYPE = "unknown"


class FormatError(ValueError):
    """A file or a record breaks a rule of its format."""


def letter(index: int) -> str:
    """Option letter of a 0-based index: 0 -> ``A``."""
    return LETTERS[index]


def read_json(path: str | Path) -> Any:
    """Parsed JSON of ``path``; a missing file or bad JSON raises :class:`FormatError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from exc


def _read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) of every non-blank line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    rows = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}: line {n}: invalid JSON: {exc.msg}") from exc
    return rows


# ------------------------------------------------------------------------------ record checks


def _where(source: str, index: int, key: str | None = None, value: Any = None) -> str:
    return f"{source}: record {index}" + (f" ({key} {value!r})" if key is not None else "")


def _records(data: Any, source: str, key: str | None) -> list[Any]:
    """The record list: ``data[key]`` of a top-level object, or ``data`` itself when key is None."""
    if key is None:
        if not isinstance(data, list):
            raise FormatError(f"{source}: must be a JSON array of objects, got {type(data).__name__}")
        return data
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise FormatError(f"{source}: must be a JSON object with a {key!r} array")
    return data[key]


def _object(record: Any, source: str, index: int) -> dict:
    if not isinstance(record, dict):
        raise FormatError(f"{_where(source, index)}: must be a JSON object, got {type(record).__name__}")
    return record


def _id(record: dict, key: str, source: str, index: int) -> Hashable:
    if key not in record:
        raise FormatError(f"{_where(source, index)}: missing {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FormatError(f"{_where(source, index)}: {key} must be an integer or a string, "
                          f"got {value!r}")
    return value


def _text(record: dict, key: str, where: str, *, allow_empty: bool = True) -> str:
    if key not in record:
        raise FormatError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise FormatError(f"{where}: {key} must be a string, got {value!r}")
    if not allow_empty and not value.strip():
        raise FormatError(f"{where}: {key} must not be empty")
    return value


def _unique(ids: Iterable[tuple[int, Hashable]], key: str, source: str, what: str,
            unit: str = "records") -> None:
    seen: dict[Hashable, int] = {}
    for index, value in ids:
        if value in seen:
            raise FormatError(f"{source}: {unit} {seen[value]} and {index}: duplicate {what} for "
                              f"{key} {value!r}")
        seen[value] = index


def _non_empty(records: list, source: str) -> None:
    if not records:
        raise FormatError(f"{source}: no records")


# ------------------------------------------------------------------------------ VQA


def _vqa_answers(answers: Any, where: str, textvqa: bool) -> list[dict]:
    if not isinstance(answers, list) or not answers:
        raise FormatError(f"{where}: answers must be a non-empty list (a split without ground "
                          "truth cannot be scored)")
    out = []
    for i, a in enumerate(answers):
        if textvqa:
            if not isinstance(a, str):
                raise FormatError(f"{where}: answers[{i}] must be a string, got {a!r}")
            out.append({"answer": a, "answer_id": i + 1})
        else:
            if not isinstance(a, dict):
                raise FormatError(f"{where}: answers[{i}] must be an object with an 'answer'")
            _text(a, "answer", f"{where}: answers[{i}]")
            out.append(a)
    return out


def check_vqa_annotations(data: Any, source: str = "annotations") -> dict[str, Any]:
    """VQAv2/OK-VQA annotations (returned as given) or TextVQA data (returned converted)."""
    textvqa = isinstance(data, dict) and "annotations" not in data and "data" in data
    records = _records(data, source, "data" if textvqa else "annotations")
    _non_empty(records, source)
    anns, ids = [], []
    for index, record in enumerate(records):
        qid = _id(_object(record, source, index), "question_id", source, index)
        where = _where(source, index, "question_id", qid)
        answers = _vqa_answers(record.get("answers"), where, textvqa)
        if textvqa:
            anns.append({**{k: v for k, v in record.items() if k != "answers"}, "answers": answers,
                         "question_type": UNKNOWN_TYPE, "answer_type": UNKNOWN_TYPE})
        else:
            _text(record, "question_type", where)
            _text(record, "answer_type", where)
            anns.append(record)
        ids.append((index, qid))
    _unique(ids, "question_id", source, "annotation")
    if textvqa:
        return {k: v for k, v in data.items() if k != "data"} | {"annotations": anns}
    return data


def check_vqa_questions(data: Any, source: str = "questions") -> dict[str, Any]:
    """VQAv2 questions file; Multiple Choice files need ``multiple_choices`` per question."""
    records = _records(data, source, "questions")
    _non_empty(records, source)
    multiple_choice = data.get("task_type") == "Multiple Choice"
    ids = []
    for index, record in enumerate(records):
        qid = _id(_object(record, source, index), "question_id", source, index)
        where = _where(source, index, "question_id", qid)
        _id(record, "image_id", source, index)
        _text(record, "question", where)
        if multiple_choice and not (isinstance(record.get("multiple_choices"), list)
                                    and all(isinstance(c, str) for c in record["multiple_choices"])):
            raise FormatError(f"{where}: a Multiple Choice question needs a 'multiple_choices' "
                              "list of strings")
        ids.append((index, qid))
    _unique(ids, "question_id", source, "question")
    return data


def check_vqa_results(data: Any, source: str = "results") -> list[dict[str, Any]]:
    """``[{"question_id", "answer"}]``, one result per question."""
    records = _records(data, source, None)
    ids = []
    for index, record in enumerate(records):
        qid = _id(_object(record, source, index), "question_id", source, index)
        _text(record, "answer", _where(source, index, "question_id", qid))
        ids.append((index, qid))
    _unique(ids, "question_id", source, "result")
    return records


def load_vqa_annotations(path: str | Path) -> dict[str, Any]:
    return check_vqa_annotations(read_json(path), str(path))


def load_vqa_questions(path: str | Path) -> dict[str, Any]:
    return check_vqa_questions(read_json(path), str(path))


def vqa_questions(annotations: str | Path, questions: str | Path | None, role: str = "") -> Iterator[
        tuple[Any, dict[str, Any], dict[str, Any]]]:
    """(question_id, question record, annotation) per annotation of a VQA file pair; the question
    text and image id come from ``questions`` when given, else from the annotation itself
    (TextVQA). ``role`` names the file in the error (e.g. "support ")."""
    anns = load_vqa_annotations(annotations)["annotations"]
    by_id = ({q["question_id"]: q for q in load_vqa_questions(questions)["questions"]}
             if questions else {})
    for ann in anns:
        qid = ann["question_id"]
        q = by_id.get(qid, ann)
        if not isinstance(q.get("question"), str) or q.get("image_id") is None:
            raise FormatError(f"{annotations}: {role}question_id {qid!r} has no question text and "
                              f"image_id: give the suite `{role.strip() + '_' if role else ''}"
                              "questions`")
        yield qid, q, ann


def load_vqa_results(path: str | Path) -> list[dict[str, Any]]:
    return check_vqa_results(read_json(path), str(path))


# ------------------------------------------------------------------------------ COCO captions


def check_caption_annotations(data: Any, source: str = "annotations") -> dict[Hashable, list[str]]:
    """COCO captions annotations -> image id to its reference captions, in file order."""
    records = _records(data, source, "annotations")
    _non_empty(records, source)
    refs: dict[Hashable, list[str]] = {}
    for index, record in enumerate(records):
        image_id = _id(_object(record, source, index), "image_id", source, index)
        caption = _text(record, "caption", _where(source, index, "image_id", image_id))
        refs.setdefault(image_id, []).append(caption)
    return refs


def check_caption_results(data: Any, source: str = "results") -> dict[Hashable, str]:
    """``[{"image_id", "caption"}]`` -> image id to its one caption."""
    records = _records(data, source, None)
    ids, out = [], {}
    for index, record in enumerate(records):
        image_id = _id(_object(record, source, index), "image_id", source, index)
        out[image_id] = _text(record, "caption", _where(source, index, "image_id", image_id))
        ids.append((index, image_id))
    _unique(ids, "image_id", source, "caption result")
    return out


def load_caption_annotations(path: str | Path) -> dict[Hashable, list[str]]:
    return check_caption_annotations(read_json(path), str(path))


def load_caption_results(path: str | Path) -> dict[Hashable, str]:
    return check_caption_results(read_json(path), str(path))


# ------------------------------------------------------------------------------ multiple choice


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question; ``answer`` is the 0-based index of the right option.
    ``image``: a file path, or the encoded image itself (MMBench's base64 cells);
    ``category``: the group it is reported in (MMBench l2-category, ScienceQA subject)."""

    id: Hashable
    question: str
    options: tuple[str, ...]
    answer: int
    image: str | bytes | None = None
    category: str | None = None

    @property
    def answer_letter(self) -> str:
        return letter(self.answer)


def _mcq_answer(value: Any, n_options: int, where: str) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    elif isinstance(value, int) and not isinstance(value, bool):
        index = value
    else:
        raise FormatError(f"{where}: answer must be an option letter or a 0-based index, got {value!r}")
    if not 0 <= index < n_options:
        raise FormatError(f"{where}: answer {value!r} is outside the {n_options} options")
    return index


def _mcq_item(record: dict, position: int, where: str, base: Path | None) -> MCQItem:
    question = _text(record, "question", where, allow_empty=False)
    options = record.get("options")
    if not (isinstance(options, list) and 2 <= len(options) <= len(LETTERS)
            and all(isinstance(o, str) and o.strip() for o in options)):
        raise FormatError(f"{where}: options must be a list of 2 to {len(LETTERS)} non-empty strings")
    if "answer" not in record:
        raise FormatError(f"{where}: missing 'answer'")
    answer = _mcq_answer(record["answer"], len(options), where)
    image = record.get("image")
    if image is not None:
        if not isinstance(image, str) or not image:
            raise FormatError(f"{where}: image must be a path string")
        if base is not None and not Path(image).is_absolute():
            image = str(base / image)
    item_id = record.get("id", position)
    if isinstance(item_id, bool) or not isinstance(item_id, int | str):
        raise FormatError(f"{where}: id must be an integer or a string, got {item_id!r}")
    return MCQItem(item_id, question, tuple(options), answer, image)


def check_mcq_items(records: Iterable[Any], source: str = "items",
                    base: Path | None = None) -> list[MCQItem]:
    """Items from parsed objects; relative image paths are resolved against ``base``."""
    items = []
    for position, record in enumerate(records):
        where = _where(source, position)
        items.append(_mcq_item(_object(record, source, position), position, where, base))
    _non_empty(items, source)
    _unique(((i, it.id) for i, it in enumerate(items)), "id", source, "item")
    return items


def load_mcq_items(path: str | Path) -> list[MCQItem]:
    """JSONL items; errors name the line. Image paths are relative to the file's folder."""
    path = Path(path)
    rows = _read_jsonl(path)
    items = []
    for position, (line, record) in enumerate(rows):
        if not isinstance(record, dict):
            raise FormatError(f"{path}: line {line}: must be a JSON object")
        items.append(_mcq_item(record, position, f"{path}: line {line}", path.parent))
    _non_empty(items, str(path))
    _unique(((line, it.id) for (line, _), it in zip(rows, items, strict=True)), "id", str(path),
            "item", unit="lines")
    return items


def load_mcq_results(path: str | Path) -> dict[Hashable, str]:
    """``[{"id", "answer"}]`` (a JSON array, or JSONL for ``*.jsonl``) -> id to prediction."""
    source = str(path)
    if source.endswith(".jsonl"):
        rows, unit = _read_jsonl(path), "line"
    else:
        rows, unit = list(enumerate(_records(read_json(path), source, None))), "record"
    ids, out = [], {}
    for index, record in rows:
        if not isinstance(record, dict):
            raise FormatError(f"{source}: {unit} {index}: must be a JSON object")
        where = f"{source}: {unit} {index}"
        if "id" not in record:
            raise FormatError(f"{where}: missing 'id'")
        item_id = record["id"]
        if isinstance(item_id, bool) or not isinstance(item_id, int | str):
            raise FormatError(f"{where}: id must be an integer or a string, got {item_id!r}")
        out[item_id] = _text(record, "answer", f"{where} (id {item_id!r})")
        ids.append((index, item_id))
    _unique(ids, "id", source, "result", unit=unit + "s")
    return out


@dataclass(frozen=True)
class PopeQuestion:
    """One line of a POPE question file (the published layout, e.g. coco_pope_random.json)."""

    question_id: Hashable
    image: str  # file name in the image folder
    text: str
    label: bool  # the object is present ("yes")


def load_pope_questions(path: str | Path) -> list[PopeQuestion]:
    """POPE's JSONL: ``{"question_id", "image", "text", "label": "yes"|"no"}`` per line;
    errors name the line and the rule."""
    path = Path(path)
    rows = _read_jsonl(path)
    out = []
    for line, record in rows:
        where = f"{path}: line {line}"
        if not isinstance(record, dict):
            raise FormatError(f"{where}: must be a JSON object")
        for name in ("question_id", "image", "text", "label"):
            if name not in record:
                raise FormatError(f"{where}: missing {name!r}")
        label = str(record["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise FormatError(f"{where}: 'label' must be yes or no, got {record['label']!r}")
        if not isinstance(record["image"], str) or not isinstance(record["text"], str):
            raise FormatError(f"{where}: 'image' and 'text' must be strings")
        out.append(PopeQuestion(record["question_id"], record["image"], record["text"], label == "yes"))
    _non_empty(out, str(path))
    _unique(((line, q.question_id) for (line, _), q in zip(rows, out, strict=True)), "question_id",
            str(path), "question", unit="lines")
    return out
