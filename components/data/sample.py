"""The in-memory form of one sample of the data contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One record: a stable key, its images in order and the JSON record."""

    key: str
    images: list[Image.Image] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def user_turn(text: str, n_images: int = 0) -> dict[str, Any]:
    """A user message: ``n_images`` image placeholders followed by the text."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_turn(text: str) -> dict[str, Any]:
    """An assistant message holding one text part."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def image_placeholders(messages: list[dict[str, Any]]) -> int:
    """Number of ``{"type": "image"}`` parts over all messages."""
    return sum(
        1
        for m in messages
        if not isinstance(m["content"], str)
        for part in m["content"]
        if part.get("type") == "image"
    )


def message_text(message: dict[str, Any]) -> str:
    """All text parts of one message, concatenated."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def single_turns(messages: list[dict]) -> list[list[dict]]:
    """A conversation as one single-turn conversation per user turn, each with all the images.

    Later turns of a conversation can be answered from earlier ones ("Where is the red circle?"
    names the circle's colour), so a model trained on whole conversations learns to copy from
    the text; split, every answer has to come from the image."""
    images = [part for m in messages if m["role"] == "user" for part in m["content"]
              if part.get("type") == "image"]
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "user" and i + 1 < len(messages) and messages[i + 1]["role"] == "assistant":
            text = [part for part in m["content"] if part.get("type") != "image"]
            out.append([{"role": "user", "content": images + text}, messages[i + 1]])
    return out


def typed_turns(record: dict[str, Any]) -> list[tuple[str | None, list[dict]]]:
    """The record's single turns (`single_turns`), each with its question type: from `qtypes`
    (or `qtype` for one turn), None for every turn when the record has no type per turn."""
    turns = single_turns(record["messages"])
    qtypes = record.get("qtypes", [record["qtype"]] if "qtype" in record else [])
    if len(qtypes) != len(turns):
        qtypes = [None] * len(turns)
    return list(zip(qtypes, turns, strict=True))
