"""Ingest of public formats into the data contract: one module per format, one registry.

``FORMATS`` maps a format name to its reader (``read(source, images) -> Item...``) and the
task names its records carry; :func:`components.data.ingest.run.ingest` drives a reader,
checks every record and writes shards plus the quarantine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from components.data.ingest import (
    cauldron,
    coco_captions,
    llava,
    obelics,
    preference,
    textvqa,
    trl_preference,
    vqa,
    webdataset,
    webdataset_captions,
)
from components.data.ingest.records import Item

Reader = Callable[[Path, "Path | None"], Iterator[Item]]


@dataclass(frozen=True)
class Format:
    """An input format: its reader and the tasks its records get (empty: the record says)."""

    name: str
    read: Reader
    tasks: tuple[str, ...]
    help: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("coco-captions", coco_captions.read, coco_captions.TASKS,
               "COCO captions JSON; --images: the image folder"),
        Format("vqav2", vqa.reader("vqav2"), vqa.TASKS,
               "folder with *questions*.json + *annotations*.json; --images: COCO images"),
        Format("okvqa", vqa.reader("okvqa"), vqa.TASKS, "as vqav2 (OK-VQA files)"),
        Format("textvqa", textvqa.read, textvqa.TASKS, "TextVQA JSON; --images: {image_id}.jpg"),
        Format("obelics", obelics.read, obelics.TASKS,
               "parquet/JSONL (file or folder) with texts/images lists; image URLs resolved "
               "under --images by sha1(url)+ext or file name, never fetched"),
        Format("cauldron", cauldron.read, cauldron.TASKS,
               "parquet/JSONL with images + texts [{user, assistant}]"),
        Format("llava", llava.read, llava.TASKS, "LLaVA-instruct JSON with conversations"),
        Format("preference", preference.read, preference.TASKS,
               "JSONL prompt/chosen/rejected (+ image path)"),
        Format("trl-preference", trl_preference.read, trl_preference.TASKS,
               "TRL DPO JSONL/parquet: prompt/chosen/rejected as text or chat turns (+ images)"),
        Format("webdataset", webdataset.read, webdataset.TASKS,
               "data-contract tar shard(s): a .tar or a folder of them"),
        Format("webdataset-captions", webdataset_captions.read, webdataset_captions.TASKS,
               "img2dataset tar shard(s) (LAION/CC3M): KEY.jpg + KEY.txt and/or KEY.json"),
    )
}


def ingest_tasks() -> tuple[str, ...]:
    """Task names the ingest formats produce."""
    return tuple(dict.fromkeys(t for f in FORMATS.values() for t in f.tasks))
