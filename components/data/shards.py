"""Webdataset shards: sample <-> tar-entry conversion, deterministic writing, streaming reads."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from components.data.sample import Sample

IMAGE_ENTRY = re.compile(r"^\d{3}\.png$")
TAR_MTIME = 0.0


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def sample_to_wds(sample: Sample) -> dict[str, Any]:
    """Tar entries of a sample: ``__key__``, ``000.png``... (PNG bytes) and ``json`` (UTF-8)."""
    if len(sample.images) > 1000:
        raise ValueError(f"{sample.key}: {len(sample.images)} images, at most 1000 per sample")
    entry: dict[str, Any] = {"__key__": sample.key}
    for i, image in enumerate(sample.images):
        entry[f"{i:03d}.png"] = _png_bytes(image)
    entry["json"] = json.dumps(sample.record, ensure_ascii=False).encode("utf-8")
    return entry


def wds_to_sample(entry: dict[str, Any]) -> Sample:
    """Inverse of ``sample_to_wds``: decode PNG entries (in order) and the JSON record."""
    key = entry["__key__"]
    if "json" not in entry:
        raise ValueError(f"{key}: no 'json' entry in shard sample (has {sorted(entry)})")
    images = []
    for name in sorted(k for k in entry if IMAGE_ENTRY.match(k)):
        image = Image.open(io.BytesIO(entry[name]))
        image.load()
        images.append(image)
    return Sample(key, images, json.loads(entry["json"]))


def write_shard(samples: Iterable[Sample], path: str | Path) -> int:
    """Write samples to one tar (fixed mtime, owner and mode: byte-reproducible); returns the count.

    The members are exactly what webdataset's `TarWriter(encoder=False, mtime=0)` writes (a
    test compares the bytes), written with the standard library: importing webdataset
    imports torch, seconds of start-up in every data-stage process."""
    def entries():
        for sample in samples:
            entry = sample_to_wds(sample)
            yield entry.pop("__key__"), entry

    return write_members(entries(), path)


def write_members(entries: Iterable[tuple[str, dict[str, bytes]]], path: str | Path) -> int:
    """Write (key, {ext: bytes}) samples as ``key.ext`` members, in sorted ext order, atomically
    (written beside ``path``, then renamed); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
        for key, members in entries:
            for name in sorted(members):
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(members[name]), TAR_MTIME, 0o444
                info.uname = info.gname = "bigdata"
                tar.addfile(info, io.BytesIO(members[name]))
            n += 1
    os.replace(tmp, path)
    return n


def shard_name(source: str, index: int) -> str:
    """The file name of a source's ``index``-th shard in a split folder."""
    return f"{source}-{index:04d}.tar"


def shard_paths(shards_dir: Path, split: str, sources: list[str]) -> list[Path]:
    """The shards of `split` written for `sources`; an error if a source has none."""
    paths = []
    for source in sources:
        found = sorted((Path(shards_dir) / split).glob(f"{source}-*.tar"))
        if not found:
            raise FileNotFoundError(f"no {split} shards for source {source!r} in {shards_dir}")
        paths.extend(found)
    return paths


def split_sources(shards_dir: str | Path, split: str) -> list[str]:
    """The sources (shard stems: synthetic families and datasets) with shards in ``split``."""
    return sorted({p.name.rsplit("-", 1)[0] for p in (Path(shards_dir) / split).glob("*-*.tar")})


def split_shards(shard_dir: str | Path, split: str) -> list[Path]:
    """The shard files of one split, sorted by name."""
    return sorted((Path(shard_dir) / split).glob("*.tar"))


def _dataset(shard_paths: Iterable[str | Path]) -> Any:
    import webdataset as wds

    urls = [str(p) for p in shard_paths]
    if not urls:
        return []
    return wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)


def read_samples(shard_paths: Iterable[str | Path]) -> Iterator[Sample]:
    """Stream samples from shards, in file order, images decoded with PIL."""
    for entry in _dataset(shard_paths):
        yield wds_to_sample(entry)


def read_records(shard_paths: Iterable[str | Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream (key, record) pairs without decoding images."""
    for entry in _dataset(shard_paths):
        yield entry["__key__"], json.loads(entry["json"])


def sample_images(shards_dir: str | Path, sources: list[str], n: int, split: str = "train") -> list:
    """Up to ``n`` images of ``split``, spread evenly over ``sources`` (first images of each)."""
    from itertools import islice

    images = []
    for source in sources:
        samples = read_samples(shard_paths(Path(shards_dir), split, [source]))
        images += [s.images[0] for s in islice(samples, n // len(sources)) if s.images]
    return images
