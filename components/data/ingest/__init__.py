"""Ingest of public formats into the data contract: one module per format, one registry.

``FORMATS`` maps a format name to its reader (``read(input, images, limits) -> Item...``, one
input at a time), the suffixes it reads in a source folder and the task names its records
carry; :func:`components.data.ingest.run.ingest` plans the source (:meth:`Format.inputs`),
drives the reader input by input, checks every record and writes shards plus the quarantine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
from components.data.ingest.sources import SourceFile, plan

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

Reader = Callable[[Path, "Path | None", "Limits"], Iterator[Item]]
Planner = Callable[[Path], list[SourceFile]]


@dataclass(frozen=True)
class Format:
    """An input format: its reader, the tasks its records get (empty: the record says) and
    the suffixes of the files it reads in a source folder (or its own ``planner``)."""

    name: str
    read: Reader
    tasks: tuple[str, ...]
    help: str
    suffixes: tuple[str, ...]
    planner: Planner | None = None

    def inputs(self, source: Path) -> list[SourceFile]:
        """What of ``source`` is read, and every other file of a source folder with why not."""
        return self.planner(source) if self.planner else plan(source, self.suffixes)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("coco-captions", coco_captions.read, coco_captions.TASKS,
               "COCO captions JSON; --images: the image folder", coco_captions.SUFFIXES),
        Format("vqav2", vqa.reader("vqav2"), vqa.TASKS,
               "folder with *questions*.json + *annotations*.json; --images: COCO images",
               vqa.SUFFIXES, vqa.plan),
        Format("okvqa", vqa.reader("okvqa"), vqa.TASKS, "as vqav2 (OK-VQA files)",
               vqa.SUFFIXES, vqa.plan),
        Format("textvqa", textvqa.read, textvqa.TASKS, "TextVQA JSON; --images: {image_id}.jpg",
               textvqa.SUFFIXES),
        Format("obelics", obelics.read, obelics.TASKS,
               "parquet/JSONL (file or folder) with texts/images lists; image URLs resolved "
               "under --images by sha1(url)+ext or file name, never fetched", obelics.SUFFIXES),
        Format("cauldron", cauldron.read, cauldron.TASKS,
               "parquet/JSONL with images + texts [{user, assistant}]", cauldron.SUFFIXES),
        Format("llava", llava.read, llava.TASKS, "LLaVA-instruct JSON with conversations",
               llava.SUFFIXES),
        Format("preference", preference.read, preference.TASKS,
               "JSONL prompt/chosen/rejected (+ image path)", preference.SUFFIXES),
        Format("trl-preference", trl_preference.read, trl_preference.TASKS,
               "TRL DPO JSONL/parquet: prompt/chosen/rejected as text or chat turns (+ images)",
               trl_preference.SUFFIXES),
        Format("webdataset", webdataset.read, webdataset.TASKS,
               "data-contract tar shard(s): a .tar or a folder of them", webdataset.SUFFIXES),
        Format("webdataset-captions", webdataset_captions.read, webdataset_captions.TASKS,
               "img2dataset tar shard(s) (LAION/CC3M): KEY.jpg + KEY.txt and/or KEY.json",
               webdataset_captions.SUFFIXES),
    )
}


def ingest_tasks() -> tuple[str, ...]:
    """Task names the ingest formats produce."""
    return tuple(dict.fromkeys(t for f in FORMATS.values() for t in f.tasks))
