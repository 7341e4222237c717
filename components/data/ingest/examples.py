"""Tiny, clean example inputs in every ingest format (for tests, docs and trying the CLI).

``python -m components.data.ingest.examples DIR`` writes them all under ``DIR/<format>``.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.shards import write_shard

COLOURS = ("red", "green", "blue", "yellow")


@dataclass(frozen=True)
class Example:
    """An example input: ``source`` and ``images`` as the CLI takes them, and its record count."""

    source: Path
    images: Path | None
    records: int


def png(i: int, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[i % len(COLOURS)]).save(buf, format="PNG")
    return buf.getvalue()


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(png(i))
    return folder


def _json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def coco_captions(d: Path) -> Example:
    names = [f"COCO_val2014_{i:012d}.jpg" for i in (1, 2)]
    images = _images(d / "images", names)
    doc = {
        "images": [{"id": i, "file_name": n, "width": 32, "height": 24}
                   for i, n in zip((1, 2), names, strict=True)],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A red square."},
            {"id": 11, "image_id": 1, "caption": "Something red fills the frame."},
            {"id": 12, "image_id": 2, "caption": "A green square."},
        ],
    }
    return Example(_json(d / "captions_val2014.json", doc), images, 3)


def vqa(d: Path) -> Example:
    names = [f"COCO_val2014_{i:012d}.jpg" for i in (1, 2)]
    images = _images(d / "images", names)
    qs = [{"image_id": 1, "question": "What colour is it?", "question_id": 100},
          {"image_id": 2, "question": "Is it green?", "question_id": 200}]
    anns = [{"question_id": 100, "image_id": 1, "multiple_choice_answer": "red",
             "answers": [{"answer": "red", "answer_id": k} for k in range(1, 4)]},
            {"question_id": 200, "image_id": 2, "multiple_choice_answer": "yes",
             "answers": [{"answer": "yes", "answer_id": 1}, {"answer": "no", "answer_id": 2}]}]
    _json(d / "src" / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": qs})
    _json(d / "src" / "v2_mscoco_val2014_annotations.json", {"annotations": anns})
    return Example(d / "src", images, 2)


def textvqa(d: Path) -> Example:
    images = _images(d / "images", ["0a1b.jpg", "0c2d.jpg"])
    data = [{"question_id": 1, "image_id": "0a1b", "question": "What does the sign say?",
             "answers": ["stop"] * 7 + ["halt"] * 3},
            {"question_id": 2, "image_id": "0c2d", "question": "What number is shown?",
             "answers": ["42"] * 10}]
    return Example(_json(d / "TextVQA_0.5.1_val.json", {"data": data}), images, 2)


def obelics_rows() -> list[dict]:
    return [
        {"id": "doc1", "texts": ["Our trip began here.", None, "Then we saw this.", None],
         "images": [None, png(0), None, png(1)]},
        {"id": "doc2", "texts": [None, "A single picture of a square."],
         "images": [png(2), None]},
    ]


def obelics(d: Path) -> Example:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(obelics_rows()), d / "obelics.parquet")
    return Example(d / "obelics.parquet", None, 2)


def obelics_jsonl(d: Path) -> Example:
    images = _images(d / "images", ["a.png", "b.png"])
    rows = [{"texts": ["Intro.", None, None, "Outro."], "images": [None, "a.png", "b.png", None]}]
    return Example(_jsonl(d / "obelics.jsonl", rows), images, 1)


def cauldron_rows() -> list[dict]:
    return [
        {"images": [{"bytes": png(0), "path": None}],
         "texts": [{"user": "What colour?", "assistant": "Red.", "source": "synthetic"},
                   {"user": "Shape?", "assistant": "A square.", "source": "synthetic"}]},
        {"images": [{"bytes": png(1), "path": None}, {"bytes": png(2), "path": None}],
         "texts": [{"user": "Are they the same?", "assistant": "No.", "source": "synthetic"}]},
    ]


def cauldron(d: Path) -> Example:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(cauldron_rows()), d / "cauldron.parquet")
    return Example(d / "cauldron.parquet", None, 2)


def llava(d: Path) -> Example:
    images = _images(d / "images", ["1.jpg"])
    rows = [
        {"id": "000001", "image": "1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": "A red square."},
            {"from": "human", "value": "Is it round?"},
            {"from": "gpt", "value": "No."}]},
        {"id": "text-1", "conversations": [
            {"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
    ]
    return Example(_json(d / "llava_instruct.json", rows), images, 2)


def preference(d: Path) -> Example:
    images = _images(d / "images", ["p0.png"])
    rows = [{"id": 0, "prompt": "Describe the image.", "image": "p0.png",
             "chosen": "A red square.", "rejected": "A blue circle."},
            {"id": 1, "prompt": "Is 3 > 2?", "chosen": "Yes.", "rejected": "No."}]
    return Example(_jsonl(d / "prefs.jsonl", rows), images, 2)


def webdataset_samples() -> list[Sample]:
    image = Image.open(io.BytesIO(png(0)))
    return [
        Sample("ext-0000", [image], {"task": "vqa", "source": "external",
                                     "messages": [user_turn("Colour?", 1), assistant_turn("red")],
                                     "answers": ["red"]}),
        Sample("ext-0001", [], {"task": "text", "source": "external",
                                "messages": [user_turn("2+2?"), assistant_turn("4")],
                                "answers": ["4"]}),
    ]


def webdataset(d: Path) -> Example:
    path = d / "external-0000.tar"
    write_shard(webdataset_samples(), path)
    return Example(path, None, 2)


EXAMPLES = {
    "coco-captions": coco_captions,
    "vqav2": vqa,
    "okvqa": vqa,
    "textvqa": textvqa,
    "obelics": obelics,
    "cauldron": cauldron,
    "llava": llava,
    "preference": preference,
    "webdataset": webdataset,
}


def main(out: str) -> None:
    for fmt, write in EXAMPLES.items():
        ex = write(Path(out) / fmt)
        print(json.dumps({"format": fmt, "source": str(ex.source),
                          "images": None if ex.images is None else str(ex.images),
                          "records": ex.records}))


if __name__ == "__main__":
    main(sys.argv[1])
