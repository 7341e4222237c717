"""Tiny, clean example inputs in every ingest format (for tests, docs and trying the CLI).

``python -m components.data.ingest.examples DIR`` writes them all under ``DIR/<format>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.data.quarantine import write_tar_sample
from components.data.sample import Sample, assistant_turn, user_turn
from components.data.shards import write_shard

COLOURS = ("red", "green", "blue", "yellow")


@dataclass(frozen=True)
class Example:
    """An example input: ``source`` and ``images`` as the CLI takes them, and its record count."""

    source: Path
    images: Path | None
    records: int


def png(i: int, size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[i % len(COLOURS)]).save(buf, format=fmt)
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


OBELICS_URLS = ("https://example.com/photos/red%20square.png", "https://cdn.example.org/i?id=7")


def sha1_name(url: str, ext: str = "") -> str:
    """A downloader's hash name for ``url`` (see ``images.url_file_names``)."""
    return hashlib.sha1(url.encode()).hexdigest() + ext


def obelics_urls(d: Path) -> Example:
    """OBELICS as published: image URLs, resolved under ``images`` (one by its file name,
    one by its sha1 hash: the URL has no file name)."""
    images = d / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "red square.png").write_bytes(png(0))
    (images / sha1_name(OBELICS_URLS[1])).write_bytes(png(1))
    rows = [{"texts": ["A trip report.", None, "Then this.", None, "The end."],
             "images": [None, OBELICS_URLS[0], None, OBELICS_URLS[1], None],
             "metadata": json.dumps([None, {"src": OBELICS_URLS[0]}, None, {}, None])}]
    return Example(_jsonl(d / "obelics-urls.jsonl", rows), images, 1)


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


def trl_preference_rows() -> list[dict]:
    """TRL's forms: conversational with an image, a multi-turn text prompt, standard
    (strings) with an image, and an implicit prompt."""
    def say(role: str, text: str) -> dict:
        return {"role": role, "content": [{"type": "text", "text": text}]}

    ask = [say("user", "Is 3 > 2?")]
    return [
        {"id": "t0", "prompt": [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}],
         "chosen": [say("assistant", "Red.")], "rejected": [say("assistant", "Blue.")],
         "images": ["t0.png"]},
        {"id": "t1", "prompt": [{"role": "system", "content": "Answer in one word."},
                                {"role": "user", "content": "Is 3 > 2?"},
                                {"role": "assistant", "content": "Yes."},
                                {"role": "user", "content": "Is 2 > 3?"}],
         "chosen": [{"role": "assistant", "content": "No."}],
         "rejected": [{"role": "assistant", "content": "Yes."}]},
        {"id": "t2", "prompt": "Describe the image.", "chosen": "A green square.",
         "rejected": "A red circle.", "images": ["t1.png"]},
        {"id": "t3", "chosen": ask + [say("assistant", "Yes.")],
         "rejected": ask + [say("assistant", "No.")]},
    ]


def trl_preference(d: Path) -> Example:
    images = _images(d / "images", ["t0.png", "t1.png"])
    return Example(_jsonl(d / "trl-dpo.jsonl", trl_preference_rows()), images, 4)


def webdataset_captions_members() -> list[dict[str, bytes | str]]:
    """img2dataset's layout: KEY.jpg/png/webp with KEY.txt and/or KEY.json."""
    def meta(i: int, **kw: object) -> bytes:
        return json.dumps({"key": f"{i:09d}", "status": "success", "width": 32, "height": 24,
                           "url": f"https://example.com/{i}.jpg", **kw}).encode()

    return [
        {"__key__": "000000000", "png": png(0), "txt": b"A red square.", "json": meta(0)},
        {"__key__": "000000001", "jpg": png(1, fmt="JPEG"),
         "json": meta(1, caption="A green square.")},
        {"__key__": "000000002", "webp": png(2, fmt="WEBP"), "txt": b"A blue square."},
    ]


def webdataset_captions(d: Path) -> Example:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "00000.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in webdataset_captions_members():
            write_tar_sample(tar, sample)
    return Example(path, None, 3)


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
    "trl-preference": trl_preference,
    "webdataset": webdataset,
    "webdataset-captions": webdataset_captions,
}
# further layouts of a format: name -> (format, writer)
VARIANTS: dict[str, tuple[str, Callable[[Path], Example]]] = {
    "obelics-jsonl": ("obelics", obelics_jsonl),
    "obelics-urls": ("obelics", obelics_urls),
}


def main(out: str) -> None:
    writers = {**{fmt: (fmt, write) for fmt, write in EXAMPLES.items()}, **VARIANTS}
    for name, (fmt, write) in writers.items():
        ex = write(Path(out) / name)
        print(json.dumps({"format": fmt, "example": name, "source": str(ex.source),
                          "images": None if ex.images is None else str(ex.images),
                          "records": ex.records}))


if __name__ == "__main__":
    main(sys.argv[1])
