"""Per-record checks of the data contract; the first rule a sample breaks quarantines it.

The bounds and caps they apply are :class:`~components.data.ingest.limits.Limits` (one place).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from components.data.ingest.fields import find_surrogate
from components.data.ingest.limits import Limits  # re-exported: callers import it from here
from components.data.manifest import manifest_row
from components.data.quarantine import Reject
from components.data.sample import Sample, message_text
from components.data.validation import IMAGE_TASKS, TEXT_ONLY_TASKS

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "image")


def check_messages(messages: Any) -> None:
    """``messages`` is a non-empty list of chat messages with text/image parts."""
    if not isinstance(messages, list) or not messages:
        raise Reject("missing_field" if not messages else "wrong_type", "'messages' list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Reject("wrong_type", f"messages[{i}] is not a chat message with a known role")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise Reject("wrong_type", f"messages[{i}].content is {type(content).__name__}")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                raise Reject("wrong_type", f"messages[{i}].content[{j}] is not a text/image part")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise Reject("wrong_type", f"messages[{i}].content[{j}].text is not a string")


def check_sample(sample: Sample, tasks: Collection[str], limits: Limits) -> dict[str, Any]:
    """Raise :class:`Reject` for the first broken rule; return the sample's manifest row."""
    record = sample.record
    bad = find_surrogate(record)
    if bad:
        raise Reject("invalid_utf8", f"lone surrogate in {bad}")
    if record.get("task") not in tasks:
        raise Reject("unknown_task", f"task {record.get('task')!r} is not registered")
    check_messages(record.get("messages"))
    for name in ("chosen", "rejected"):
        if name in record and not isinstance(record[name], str):
            raise Reject("wrong_type", f"{name!r} is not a string")
    answers = record.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise Reject("wrong_type", "'answers' is not a list of strings")
    row = manifest_row(sample, "", "")
    if row["n_images"] != row["n_image_placeholders"]:
        raise Reject("placeholder_mismatch",
                     f"{row['n_image_placeholders']} placeholders, {row['n_images']} images")
    task, n_images = record["task"], row["n_images"]
    if n_images < IMAGE_TASKS.get(task, 0) or (task in TEXT_ONLY_TASKS and n_images):
        raise Reject("image_count", f"{n_images} image(s) on a {task!r} sample")
    _check_answers(record)
    if not 1 <= row["text_chars"] <= limits.max_text_chars:
        raise Reject("text_length", f"{row['text_chars']} chars, bounds [1, {limits.max_text_chars}]")
    return row


def _check_answers(record: dict[str, Any]) -> None:
    if record["task"] == "preference":
        for name in ("chosen", "rejected"):
            if not str(record.get(name) or "").strip():
                raise Reject("empty_answer", f"empty {name!r}")
        return
    replies = [message_text(m) for m in record["messages"] if m["role"] == "assistant"]
    if not replies:
        raise Reject("empty_answer", "no assistant turn")
    for i, reply in enumerate(replies):
        if not reply.strip():
            raise Reject("empty_answer", f"assistant turn {i} is empty")
    if any(not a.strip() for a in record.get("answers", [])):
        raise Reject("empty_answer", "an empty reference answer")
