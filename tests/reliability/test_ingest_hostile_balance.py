"""Each hostile input of the hardening issue, ingested over a previous good output with the
default threshold: nothing crashes (at most the quarantine gate refuses the run), nothing is
lost (read = accepted + quarantined, counted from the written files, file by file too) and
the previous output is never destroyed."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from components.data.ingest.examples import EXAMPLES, png
from components.data.ingest.run import ingest
from components.data.quarantine import QuarantineRateError, read_quarantine, tar_members
from components.data.sample import Sample, assistant_turn, user_turn
from components.data.shards import write_shard


def text_sample(i: int) -> Sample:
    return Sample(f"ext-{i:04d}", [], {"task": "text", "source": "ext", "answers": ["4"],
                                       "messages": [user_turn(f"{i}: 2+2?"), assistant_turn("4")]})


def shard(path: Path, n: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_shard([text_sample(i) for i in range(n)], path)
    return path


def header(path: Path, index: int) -> int:
    with tarfile.open(path) as tar:
        return tar.getmembers()[index].offset


def cut_on_header(d: Path) -> tuple[str, Path]:
    path = shard(d / "s.tar")
    path.write_bytes(path.read_bytes()[: header(path, 2)])
    return "webdataset", path


def flipped_header_byte(d: Path) -> tuple[str, Path]:
    path = shard(d / "s.tar")
    data = bytearray(path.read_bytes())
    data[header(path, 2) + 1] ^= 1
    path.write_bytes(bytes(data))
    return "webdataset", path


def sparse_member(d: Path) -> tuple[str, Path]:
    info = tarfile.TarInfo("b.json")
    info.size, info.type = 2, tarfile.GNUTYPE_SPARSE
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:410] = b"%011o\0" % 0 + b"%011o\0" % 2
    buf[483:495] = b"%011o\0" % (48 << 20)
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % sum(buf)
    path = shard(d / "s.tar", 2)
    end = header(path, 1)  # after the first sample
    path.write_bytes(path.read_bytes()[:end] + bytes(buf) + b"{}" + bytes(510) + bytes(1024))
    return "webdataset", path


def forged_size(d: Path) -> tuple[str, Path]:
    path = shard(d / "s.tar", 2)
    info = tarfile.TarInfo("c.json")
    info.size = 48 << 20
    end = header(path, 1)  # after the first sample
    path.write_bytes(path.read_bytes()[:end] + info.tobuf(tarfile.USTAR_FORMAT) + bytes(2048))
    return "webdataset", path


def member_flood(d: Path) -> tuple[str, Path]:
    path = shard(d / "s.tar", 2)
    with tarfile.open(path, "a") as tar:
        for i in range(300):
            info = tarfile.TarInfo(f"flood.m{i:03d}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return "webdataset", path


def images_flood(d: Path) -> tuple[str, Path]:
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(png(0))
    rows = [{"id": i, "images": ["a.png"] * n, "texts": [{"user": "Q?", "assistant": "A."}]}
            for i, n in enumerate((1, 1001, 1))]
    (d / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "cauldron", d / "c.jsonl"


def long_ids(d: Path) -> tuple[str, Path]:
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(png(0))
    rows = [{"id": c * 150, "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>Q?"}, {"from": "gpt", "value": "A."}]} for c in "xyz"]
    (d / "l.json").write_text(json.dumps(rows))
    return "llava", d / "l.json"


def odd_suffixes(d: Path) -> tuple[str, Path]:
    d.mkdir(parents=True)
    row = json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n"
    (d / "a.jsonl").write_text(row)
    (d / "b.JSONL").write_text(row)
    (d / "c.jsonl.gz").write_bytes(gzip.compress(row.encode()))
    return "preference", d


def raising_reader(d: Path) -> tuple[str, Path]:
    d.mkdir(parents=True)
    row = json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n"
    (d / "a.jsonl").write_text(row)
    os.symlink("/proc/self/mem", d / "b.jsonl")
    (d / "c.jsonl").write_text(row)
    return "preference", d


def undecodable_key(d: Path) -> tuple[str, Path]:
    path = shard(d / "s.tar", 2)
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(b"\xff.json".decode("utf-8", "surrogateescape"))
        data = json.dumps(text_sample(9).record).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return "webdataset", path


HOSTILE: dict[str, Callable[[Path], tuple[str, Path]]] = {
    f.__name__: f for f in (cut_on_header, flipped_header_byte, sparse_member, forged_size,
                            member_flood, images_flood, long_ids, odd_suffixes, raising_reader,
                            undecodable_key)}


def counted(out: Path) -> tuple[int, int, int]:
    """(samples in the shards, quarantine rows, the files ledger's records), from the files."""
    samples = 0
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p, "r:") as tar:
            samples += sum(m.name.endswith(".json") for m in tar_members(tar, p.stat().st_size))
    rows = (out / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    assert len(read_quarantine(out / "quarantine" / "quarantine-0000.tar")) == len(rows)
    files = [json.loads(line) for line in
             (out / "quarantine" / "files.jsonl").read_text().splitlines()]
    return samples, len(rows), sum(f["read"] for f in files)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_loses_nothing_and_keeps_the_previous_output(name: str,
                                                                   tmp_path: Path) -> None:
    if name == "raising_reader" and not Path("/proc/self/mem").exists():
        pytest.skip("needs Linux /proc")
    ex = EXAMPLES["webdataset"](tmp_path / "good")
    out = tmp_path / "out"
    ingest("webdataset", ex.source, out, validate=False)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    fmt, source = HOSTILE[name](tmp_path / "in")
    try:
        summary = ingest(fmt, source, out, source.parent, validate=False)
    except QuarantineRateError as e:  # the gate may refuse the run; nothing else may happen
        summary = e.summary  # type: ignore[attr-defined]
        assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    written = Path(summary.out)
    samples, quarantined, by_file = counted(written)
    assert samples + quarantined == summary.read == by_file > 0
    assert (samples, quarantined) == (summary.accepted, summary.quarantined)
    assert summary.quarantined >= 1 or name == "long_ids"
