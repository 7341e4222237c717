"""Export generated samples in public layouts: VQAv2 (questions + annotations JSON, COCO image
files) and COCO captions (one captions JSON, an image folder).

What a user with their own COCO / VQAv2 folders has, made from the project's generators, so
the bring-your-own-data path (`data.datasets`, official-format suites) can be tried end to
end without downloads. Images are written as JPEG under COCO file names, as the real sets
ship them; every scene's question turns become one VQAv2 question each, with ten identical
human answers (so the official accuracy of the right answer is 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.data.corpus import generate_samples
from components.data.sample import message_text

ANSWERS_PER_QUESTION = 10  # as VQAv2's annotators


def coco_file_name(subset: str, image_id: int) -> str:
    return f"COCO_{subset}_{image_id:012d}.jpg"


def _qa_turns(messages: list[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs of a conversation's user/assistant turns."""
    return [(message_text(q), message_text(a)) for q, a in zip(messages[::2], messages[1::2], strict=False)
            if q["role"] == "user" and a["role"] == "assistant"]


def export_vqav2(source: str, count: int, out: Path, *, seed: int = 0, split: str = "train",
                 image_size: int = 64, subset: str = "train2014") -> dict[str, Any]:
    """``count`` scenes of a VQA source as ``out/v2_OpenEnded_mscoco_<subset>_questions.json``,
    ``out/v2_mscoco_<subset>_annotations.json`` and ``out/<subset>/COCO_<subset>_<id>.jpg``."""
    out = Path(out)
    (out / subset).mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for image_id, sample in enumerate(generate_samples(source, seed, split, 0, count, image_size), 1):
        sample.images[0].convert("RGB").save(out / subset / coco_file_name(subset, image_id), quality=95)
        for turn, (question, answer) in enumerate(_qa_turns(sample.record["messages"])):
            qid = image_id * 100 + turn
            questions.append({"image_id": image_id, "question": question, "question_id": qid})
            annotations.append({
                "question_id": qid, "image_id": image_id, "question_type": question.split()[0].lower(),
                "answer_type": "yes/no" if answer in ("yes", "no") else "other",
                "multiple_choice_answer": answer,
                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i + 1}
                            for i in range(ANSWERS_PER_QUESTION)]})
    info = {"description": f"vlmforge export of {source} (seed {seed}, {split})"}
    (out / f"v2_OpenEnded_mscoco_{subset}_questions.json").write_text(json.dumps({
        "info": info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subset,
        "questions": questions}))
    (out / f"v2_mscoco_{subset}_annotations.json").write_text(json.dumps({
        "info": info, "data_type": "mscoco", "data_subtype": subset, "annotations": annotations}))
    return {"layout": "vqav2", "out": str(out), "images": count, "questions": len(questions)}


def export_coco_captions(source: str, count: int, out: Path, *, seed: int = 0,
                         split: str = "train", image_size: int = 64,
                         subset: str = "train2014") -> dict[str, Any]:
    """``count`` captioned images as ``out/annotations/captions_<subset>.json`` and
    ``out/<subset>/COCO_<subset>_<id>.jpg`` (every reference caption one annotation)."""
    out = Path(out)
    (out / subset).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, sample in enumerate(generate_samples(source, seed, split, 0, count, image_size), 1):
        name = coco_file_name(subset, image_id)
        image = sample.images[0].convert("RGB")
        image.save(out / subset / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        for caption in sample.record["answers"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / f"captions_{subset}.json").write_text(json.dumps({
        "info": {"description": f"vlmforge export of {source} (seed {seed}, {split})"},
        "images": images, "annotations": annotations}))
    return {"layout": "coco-captions", "out": str(out), "images": count,
            "captions": len(annotations)}


EXPORTERS = {"vqav2": export_vqav2, "coco-captions": export_coco_captions}  # layout -> exporter
