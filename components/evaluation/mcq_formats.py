"""Multiple-choice benchmarks in their published layouts, read as :class:`MCQItem` lists.

* MMBench TSV: columns ``index, question, hint, A, B, C, D[, E...], answer, category,
  l2-category, image`` (base64). An image cell of at most 64 characters is the ``index`` of
  the row whose image it shares (as in MMBench's dev TSV). The options are the filled letter
  columns from A on (an empty or ``nan`` cell is no option); a hint is prepended as MMBench
  does (``Hint: ...\\nQuestion: ...``). Rows with ``index`` >= 1,000,000 are MMBench's own
  circular copies of row ``index % 1,000,000``: not questions of their own, since
  :func:`circular_items` rebuilds those rotations from the originals (CircularEval).
* ScienceQA ``problems.json``: ``{id: {question, choices, answer, hint, image, split,
  subject, ...}}``, images at ``<root>/<split>/<id>/<image>``; one split is read, text-only
  problems (``image`` null) are kept with ``image=None``.

Every rule broken raises :class:`FormatError` naming the row (MMBench) or problem (ScienceQA).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from components.evaluation.official_formats import (
    LETTERS,
    FormatError,
    MCQItem,
    load_mcq_items,
    read_json,
)

__all__ = ["CIRCULAR_OFFSET", "ITEM_FORMATS", "circular_items", "load_mcq_file",
           "load_mmbench_tsv", "load_scienceqa"]

ITEM_FORMATS = ("jsonl", "mmbench", "scienceqa")
CIRCULAR_OFFSET = 1_000_000  # MMBench: copy k of question i has index i + k * 1,000,000
REFERENCE_MAX = 64  # an MMBench image cell this short names another row's index
_REQUIRED = ("index", "question", "A", "B")


def _absent(cell: str | None) -> bool:
    return cell is None or cell.strip() == "" or cell.strip().lower() == "nan"


def _tsv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a TSV whose cells may hold whole base64 images."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t")
            header, rows = list(reader.fieldnames or []), []
            for row in reader:
                if None in row or None in row.values():
                    raise FormatError(f"{path}: row {len(rows) + 1}: has a different number of "
                                      f"cells than the header's {len(header)}")
                rows.append(row)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not a readable UTF-8 TSV ({exc})") from exc
    finally:
        csv.field_size_limit(limit)
    return header, rows


def _index(cell: str, where: str) -> int:
    try:
        value = int(cell.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise FormatError(f"{where}: index must be a non-negative integer, got {cell!r}")
    return value


def _decode_image(cell: str, where: str) -> bytes:
    try:
        data = base64.b64decode(cell.strip(), validate=True)
        with Image.open(io.BytesIO(data)):
            pass
    except (binascii.Error, ValueError):
        raise FormatError(f"{where}: image is neither base64 nor the index of another row "
                          f"(a cell of at most {REFERENCE_MAX} characters)") from None
    except OSError as exc:
        raise FormatError(f"{where}: image is base64 but not an image ({exc})") from None
    return data


def _options(row: dict[str, str], letters: list[str], where: str) -> tuple[str, ...]:
    filled = [not _absent(row[c]) for c in letters]
    n = filled.index(False) if False in filled else len(filled)
    if any(filled[n:]):
        gap = letters[filled.index(True, n)]
        raise FormatError(f"{where}: option {letters[n]} is empty but option {gap} is not: "
                          "options must be filled from A without gaps")
    if n < 2:
        raise FormatError(f"{where}: needs at least options A and B")
    return tuple(row[c].strip() for c in letters[:n])


def _row_images(indexed: list[tuple[int, str, dict[str, str]]]) -> dict[int, bytes | None]:
    """Each row's image: its own base64 cell decoded, or the image of the row its short cell
    names (which must hold base64 itself), or None for an empty cell."""
    own = {index: None if _absent(row.get("image")) else _decode_image(row["image"], where)
           for index, where, row in indexed
           if _absent(row.get("image")) or len(row["image"].strip()) > REFERENCE_MAX}
    out = dict(own)
    for index, where, row in indexed:
        if index not in own:
            ref = row["image"].strip()
            target = int(ref) if ref.isdigit() else None
            if own.get(target) is None:
                raise FormatError(f"{where}: image {ref!r} must be the index of a row that holds "
                                  "a base64 image (or base64 itself)")
            out[index] = own[target]
    return out


def load_mmbench_tsv(path: str | Path) -> list[MCQItem]:
    """The questions of an MMBench TSV (its circular copies checked, not returned); item ids
    are the integer ``index``, images the decoded bytes (or None without an image)."""
    path = Path(path)
    header, rows = _tsv_rows(path)
    missing = [c for c in (*_REQUIRED, "answer") if c not in header]
    if missing:
        raise FormatError(f"{path}: header lacks column(s) {missing} (MMBench TSV: index, question, "
                          "hint, A, B, C, D, answer, category, l2-category, image)")
    letters = [c for c in LETTERS if c in header]
    if letters != list(LETTERS[: len(letters)]):
        raise FormatError(f"{path}: option columns {letters} must run from A without gaps")
    seen: dict[int, int] = {}
    indexed = []
    for n, row in enumerate(rows, start=1):
        where = f"{path}: row {n} (index {row['index'].strip()!r})"
        index = _index(row["index"], where)
        if index in seen:
            raise FormatError(f"{where}: duplicate index, also row {seen[index]}")
        seen[index] = n
        indexed.append((index, where, row))
    images = _row_images(indexed)
    items = []
    for index, where, row in indexed:
        if index >= CIRCULAR_OFFSET:
            if index % CIRCULAR_OFFSET not in seen:
                raise FormatError(f"{where}: circular copy of index {index % CIRCULAR_OFFSET}, "
                                  "which the file lacks")
            continue
        question = row["question"]
        if _absent(question):
            raise FormatError(f"{where}: question must not be empty")
        options = _options(row, letters, where)
        answer = row["answer"].strip().upper()
        if _absent(answer):
            raise FormatError(f"{where}: no answer (a split without ground truth cannot be scored)")
        if answer not in LETTERS[: len(options)]:
            raise FormatError(f"{where}: answer {row['answer']!r} is not one of the options "
                              f"{list(LETTERS[: len(options)])}")
        hint = row.get("hint")
        if not _absent(hint):
            question = f"Hint: {hint.strip()}\nQuestion: {question.strip()}"
        category = next((row[c].strip() for c in ("l2-category", "category")
                         if not _absent(row.get(c))), None)
        items.append(MCQItem(index, question.strip(), options, LETTERS.index(answer),
                             images[index], category))
    if not items:
        raise FormatError(f"{path}: no questions (rows with index below {CIRCULAR_OFFSET})")
    return items


def _scienceqa_item(pid: str, p: dict, where: str, images: Path | None, split: str) -> MCQItem:
    question, choices, answer = p.get("question"), p.get("choices"), p.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise FormatError(f"{where}: question must be a non-empty string")
    if not (isinstance(choices, list) and 2 <= len(choices) <= len(LETTERS)
            and all(isinstance(c, str) and c.strip() for c in choices)):
        raise FormatError(f"{where}: choices must be a list of 2 to {len(LETTERS)} non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise FormatError(f"{where}: answer must be the 0-based index of one of the "
                          f"{len(choices)} choices, got {answer!r}")
    hint = p.get("hint") or ""
    if not isinstance(hint, str):
        raise FormatError(f"{where}: hint must be a string or null, got {hint!r}")
    image = p.get("image")
    if image is not None:
        if not isinstance(image, str) or not image or Path(image).name != image:
            raise FormatError(f"{where}: image must be a file name or null, got {image!r}")
        if images is None:
            raise FormatError(f"{where}: has an image but no image folder was given")
        file = images / split / pid / image
        if not file.is_file():
            raise FormatError(f"{where}: image file {str(file)!r} not found "
                              "(expected <images>/<split>/<id>/<image>)")
        image = str(file)
    if hint.strip():
        question = f"Context: {hint.strip()}\nQuestion: {question.strip()}"
    subject = p.get("subject") if isinstance(p.get("subject"), str) else None
    return MCQItem(pid, question.strip(), tuple(c.strip() for c in choices), answer, image, subject)


def load_scienceqa(path: str | Path, images: str | Path | None, split: str) -> list[MCQItem]:
    """The problems of ``split`` in a ScienceQA ``problems.json``; ids are the problem ids,
    image paths ``<images>/<split>/<id>/<image>`` (checked to exist)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(f"{path}: must be a JSON object mapping problem ids to problems")
    root = Path(images) if images is not None else None
    items, splits = [], Counter()
    for pid, p in data.items():
        where = f"{path}: problem {pid!r}"
        if not isinstance(p, dict):
            raise FormatError(f"{where}: must be a JSON object, got {type(p).__name__}")
        if not isinstance(p.get("split"), str):
            raise FormatError(f"{where}: split must be a string, got {p.get('split')!r}")
        splits[p["split"]] += 1
        if p["split"] == split:
            items.append(_scienceqa_item(pid, p, where, root, split))
    if not items:
        raise FormatError(f"{path}: no problems in split {split!r} (splits: {dict(splits)})")
    return items


def circular_items(items: Sequence[MCQItem]) -> list[MCQItem]:
    """Each item followed by its rotations (MMBench CircularEval): rotation k moves option k
    to A and has id ``id + k * 1,000,000``, MMBench's numbering of its circular copies."""
    out = []
    for it in items:
        if isinstance(it.id, bool) or not isinstance(it.id, int) or not 0 <= it.id < CIRCULAR_OFFSET:
            raise FormatError(f"item {it.id!r}: circular evaluation needs integer ids from 0 "
                              f"below {CIRCULAR_OFFSET}")
        n = len(it.options)
        out += [replace(it, id=it.id + k * CIRCULAR_OFFSET, options=it.options[k:] + it.options[:k],
                        answer=(it.answer - k) % n) for k in range(n)]
    return out


def load_mcq_file(path: str | Path, items_format: str = "jsonl", *, images: str | Path | None = None,
                  split: str = "test", circular: bool = False) -> list[MCQItem]:
    """Items of an MCQ file in ``items_format`` (``ITEM_FORMATS``); ``images`` and ``split``
    apply to ScienceQA; ``circular`` adds every item's rotations."""
    if items_format == "jsonl":
        items = load_mcq_items(path)
    elif items_format == "mmbench":
        items = load_mmbench_tsv(path)
    elif items_format == "scienceqa":
        items = load_scienceqa(path, images, split)
    else:
        raise ValueError(f"unknown MCQ items format {items_format!r}; expected one of "
                         f"{list(ITEM_FORMATS)}")
    return circular_items(items) if circular else items
