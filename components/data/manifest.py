"""Manifest rows: one flat summary per sample, validated downstream by a data-quality suite."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from components.data.sample import Sample, image_placeholders, message_text

COLUMNS: tuple[str, ...] = (
    "key",
    "split",
    "source",
    "task",
    "n_images",
    "n_image_placeholders",
    "n_turns",
    "n_assistant_turns",
    "answer",
    "text_chars",
    "min_width",
    "min_height",
    "max_width",
    "max_height",
    "shard",
)


def manifest_row(sample: Sample, split: str, shard: str) -> dict[str, Any]:
    """The manifest row of one sample written to shard file ``shard``."""
    record = sample.record
    messages = record["messages"]
    assistant = [message_text(m) for m in messages if m["role"] == "assistant"]
    answers = record.get("answers") or []
    texts = [message_text(m) for m in messages]
    texts += [record[k] for k in ("chosen", "rejected") if k in record]
    widths = [im.width for im in sample.images] or [0]
    heights = [im.height for im in sample.images] or [0]
    return {
        "key": sample.key,
        "split": split,
        "source": record["source"],
        "task": record["task"],
        "n_images": len(sample.images),
        "n_image_placeholders": image_placeholders(messages),
        "n_turns": len(messages),
        "n_assistant_turns": len(assistant),
        "answer": answers[0] if answers else (assistant[-1] if assistant else ""),
        "text_chars": sum(len(t) for t in texts),
        "min_width": min(widths),
        "min_height": min(heights),
        "max_width": max(widths),
        "max_height": max(heights),
        "shard": shard,
    }


def write_manifest(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON lines (columns in ``COLUMNS`` order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False) + "\n")
    return path


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read a manifest written by ``write_manifest``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
