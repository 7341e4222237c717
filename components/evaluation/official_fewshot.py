"""Few-shot prompts for the official VQA and caption suites (OpenFlamingo style): k solved
examples from a support file before each query, drawn by :func:`fewshot.draw_keys`
(deterministic per query and seed), never the query's own item: shots are keyed by question
id (VQA) or image id (captions), and the key the query has is left out.

A VQA shot is its question and the most common of its answers (VQAv2's
``multiple_choice_answer`` when given); a caption shot is the caption prompt and the image's
first reference caption. Shot images are file paths, opened with the query's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.sample import assistant_turn, user_turn
from components.evaluation.fewshot import draw_keys
from components.evaluation.official_formats import (
    FormatError,
    load_caption_annotations,
    read_json,
    vqa_questions,
)

__all__ = ["Shot", "SupportSet", "caption_support", "coco_file_names", "image_file",
           "vqa_support"]


@dataclass(frozen=True)
class Shot:
    """One solved support example: its user text, its answer and its image file."""

    key: str
    text: str
    answer: str
    image: Path


def image_file(folder: str | Path, pattern: str, image_id: Hashable,
               file_names: Mapping[Hashable, str] | None = None) -> Path:
    """An image's file: its COCO ``file_name`` when known, else ``pattern`` filled in."""
    if file_names and image_id in file_names:
        return Path(folder) / file_names[image_id]
    try:
        return Path(folder) / pattern.format(image_id=image_id)
    except (ValueError, KeyError, IndexError) as exc:
        raise FormatError(f"image_id {image_id!r}: image_file {pattern!r} does not fit it "
                          f"({exc})") from exc


def coco_file_names(raw: Any) -> dict[Hashable, str]:
    """``id -> file_name`` of a COCO file's ``images`` list (empty without one)."""
    images = raw.get("images", []) if isinstance(raw, dict) else []
    return {img["id"]: img["file_name"] for img in images
            if isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)}


class SupportSet:
    """Solved examples keyed by question id (VQA) or image id (captions); builds k-shot turns."""

    def __init__(self, shots: list[Shot], k: int, *, seed: int = 0, source: str = "support"):
        self.by_key = {s.key: s for s in shots}
        if len(self.by_key) != len(shots):
            dup = next(key for key, n in Counter(s.key for s in shots).items() if n > 1)
            raise FormatError(f"{source}: duplicate support key {dup!r}")
        self.keys, self.k, self.seed, self.source = sorted(self.by_key), k, seed, source

    def draw(self, query_key: Hashable) -> list[Shot]:
        try:
            keys = draw_keys(self.keys, self.k, str(query_key), seed=self.seed)
        except ValueError as exc:
            raise FormatError(f"{self.source}: {exc}") from None
        return [self.by_key[key] for key in keys]

    def prompt(self, query_key: Hashable, query: dict) -> tuple[list[dict], list[Path]]:
        """The shots' (user, assistant) turns then the query's user turn; the shots' images."""
        shots = self.draw(query_key)
        turns = [t for s in shots for t in (user_turn(s.text, 1), assistant_turn(s.answer))]
        return [*turns, query], [s.image for s in shots]


def _most_common(ann: dict) -> str:
    if isinstance(ann.get("multiple_choice_answer"), str):
        return ann["multiple_choice_answer"]
    return Counter(a["answer"] for a in ann["answers"]).most_common(1)[0][0]


def vqa_support(annotations: str | Path, questions: str | Path | None, images: str | Path,
                image_pattern: str, k: int, *, seed: int = 0) -> SupportSet:
    """Support shots from a VQAv2 / OK-VQA (+ questions) or TextVQA file pair."""
    shots = []
    for qid, q, ann in vqa_questions(annotations, questions, "support "):
        shots.append(Shot(str(qid), q["question"], _most_common(ann),
                          image_file(images, image_pattern, q["image_id"])))
    return SupportSet(shots, k, seed=seed, source=str(annotations))


def caption_support(annotations: str | Path, images: str | Path, image_pattern: str, k: int,
                    *, seed: int = 0) -> SupportSet:
    """Support shots from a COCO captions file: one per image, its first reference caption."""
    from components.data.synthetic.scenes import CAPTION_PROMPT

    refs = load_caption_annotations(annotations)
    names = coco_file_names(read_json(annotations))
    shots = [Shot(str(i), CAPTION_PROMPT, captions[0], image_file(images, image_pattern, i, names))
             for i, captions in refs.items()]
    return SupportSet(shots, k, seed=seed, source=str(annotations))
