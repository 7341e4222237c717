"""Tar shards as a faulty disk or a hostile producer leaves them: cut on a header boundary, a
flipped header byte, a zeroed header, no end-of-archive blocks, a sparse member, a forged
size. Each loss is a quarantined row naming the byte offset, never a silent short read, and
the counts hold when taken from the written files."""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from components.data.ingest import FORMATS
from components.data.ingest.checks import Limits
from components.data.ingest.examples import png, webdataset_captions_members
from components.data.ingest.run import IngestSummary, ingest
from components.data.quarantine import (
    Quarantined,
    QuarantineWriter,
    TarDamage,
    read_quarantine,
    tar_blob,
    write_tar_sample,
)
from components.data.sample import Sample, assistant_turn, user_turn
from components.data.shards import write_shard

FORMATS_WITH_TARS = ("webdataset", "webdataset-captions")


def samples(n: int, first: int = 0) -> list[Sample]:
    """``n`` data-contract samples of one image each (two members: 000.png, json)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png(0)))
    return [Sample(f"ext-{i:04d}", [image], {
        "task": "vqa", "source": "external", "answers": ["red"],
        "messages": [user_turn(f"Colour {i}?", 1), assistant_turn("red")]})
        for i in range(first, first + n)]


def caption_shard(path: Path, n: int) -> Path:
    """An img2dataset shard of ``n`` samples (png + txt + json each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = webdataset_captions_members()[0]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            write_tar_sample(tar, {**first, "__key__": f"{i:09d}"})
    return path


def shard(fmt: str, path: Path, n: int = 5, first: int = 0) -> Path:
    if fmt == "webdataset":
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shard(samples(n, first), path)
        return path
    return caption_shard(path, n)


def first_header_of_sample(path: Path, index: int) -> tarfile.TarInfo:
    """The first member of the ``index``-th sample (members grouped by key, in order)."""
    with tarfile.open(path) as tar:
        keys: list[str] = []
        for m in tar.getmembers():
            key = m.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
                if len(keys) == index + 1:
                    return m
    raise AssertionError(f"no sample {index}")


def run(fmt: str, source: Path, out: Path, **kw) -> IngestSummary:
    """Ingest (no GE, any rate); the balance counted from the written files."""
    summary = ingest(fmt, source, out, validate=False, max_quarantine_rate=1.0, **kw)
    samples_written = 0
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            samples_written += sum(m.name.endswith(".json") for m in tar.getmembers())
    ledger = lines(out / "quarantine" / "quarantine.jsonl")
    assert samples_written + len(ledger) == summary.read
    assert (samples_written, len(ledger)) == (summary.accepted, summary.quarantined)
    assert len(read_quarantine(out / "quarantine" / "quarantine-0000.tar")) == len(ledger)
    files = lines(out / "quarantine" / "files.jsonl")
    assert sum(f["read"] for f in files) == summary.read
    return summary


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quarantined(out: Path) -> list[dict]:
    return lines(out / "quarantine" / "quarantine.jsonl")


def key_of(fmt: str, i: int) -> str:
    return f"ext-{i:04d}" if fmt == "webdataset" else f"webdataset-captions-{i:09d}"


# --- a lost tail is a quarantined row with its offset -------------------------------------

@pytest.mark.parametrize("fmt", FORMATS_WITH_TARS)
def test_cut_on_a_header_boundary_is_quarantined_with_the_offset(fmt: str, tmp_path: Path) -> None:
    path = shard(fmt, tmp_path / "in" / "s.tar")
    cut = first_header_of_sample(path, 2).offset
    path.write_bytes(path.read_bytes()[:cut])
    summary = run(fmt, path, tmp_path / "out")
    # sample 0 is whole; sample 1 was being read where the file ends: it may have lost members
    assert (summary.read, summary.accepted, summary.rules) == (2, 1, {"truncated_tar": 1})
    [row] = quarantined(tmp_path / "out")
    assert row["key"] == key_of(fmt, 1)
    assert f"reading stopped at byte {cut} of {cut}" in row["detail"]
    assert "without the end-of-archive blocks" in row["detail"]
    assert summary.files["stopped"] == 1
    assert summary.files["stopped_files"][0]["path"] == str(path)


@pytest.mark.parametrize("fmt", FORMATS_WITH_TARS)
def test_a_flipped_header_byte_is_quarantined_with_the_offset(fmt: str, tmp_path: Path) -> None:
    path = shard(fmt, tmp_path / "in" / "s.tar")
    at = first_header_of_sample(path, 2).offset
    data = bytearray(path.read_bytes())
    data[at + 3] ^= 0x20  # one bit of the member's name: the header checksum no longer holds
    path.write_bytes(bytes(data))
    summary = run(fmt, path, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.rules) == (2, 1, {"truncated_tar": 1})
    [row] = quarantined(tmp_path / "out")
    assert f"reading stopped at byte {at} of {len(data)}" in row["detail"]
    assert "bad checksum" in row["detail"]
    assert f"{len(data) - at} bytes not read" in row["detail"]


def test_a_zeroed_header_block_is_not_taken_for_the_end(tmp_path: Path) -> None:
    path = shard("webdataset", tmp_path / "in" / "s.tar")
    at = first_header_of_sample(path, 3).offset
    data = bytearray(path.read_bytes())
    data[at: at + 512] = bytes(512)
    path.write_bytes(bytes(data))
    summary = run("webdataset", path, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.rules) == (3, 2, {"truncated_tar": 1})
    assert "a member lost its header" in quarantined(tmp_path / "out")[0]["detail"]


def test_missing_end_of_archive_blocks_quarantine_the_last_sample(tmp_path: Path) -> None:
    path = shard("webdataset", tmp_path / "in" / "s.tar")
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    path.write_bytes(path.read_bytes()[:end + 512])  # one of the two zero blocks
    summary = run("webdataset", path, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.rules) == (5, 4, {"truncated_tar": 1})
    assert "end-of-archive blocks are cut short (512 of 1024 bytes)" in \
        quarantined(tmp_path / "out")[0]["detail"]


def test_a_whole_shard_reads_every_sample(tmp_path: Path) -> None:
    path = shard("webdataset", tmp_path / "in" / "s.tar")
    summary = run("webdataset", path, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.quarantined) == (5, 5, 0)
    assert summary.files == {**summary.files, "read": 1, "stopped": 0, "skipped": 0}


def test_a_cut_shard_among_whole_ones_is_counted_and_the_others_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for i, name in enumerate(("a.tar", "b.tar", "c.tar")):
        shard("webdataset", folder / name, 3, first=10 * i)
    b = folder / "b.tar"
    b.write_bytes(b.read_bytes()[: first_header_of_sample(b, 1).offset + 100])  # a header cut
    summary = run("webdataset", folder, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.quarantined) == (7, 6, 1)
    assert "unreadable header (100 of 512 bytes, cut); 100 bytes not read" in \
        quarantined(tmp_path / "out")[0]["detail"]
    rows = {Path(f["path"]).name: f for f in lines(tmp_path / "out" / "quarantine" / "files.jsonl")}
    assert {n: r["status"] for n, r in rows.items()} == {"a.tar": "read", "b.tar": "stopped",
                                                         "c.tar": "read"}
    assert "reading stopped at byte" in rows["b.tar"]["reason"]


# --- members that must never be read whole -------------------------------------------------

def gnu_sparse(name: str, stored: bytes, realsize: int) -> bytes:
    """A GNU sparse member: ``stored`` bytes on disk that expand to ``realsize`` bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(stored), tarfile.GNUTYPE_SPARSE
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:410] = b"%011o\0" % 0 + b"%011o\0" % len(stored)  # one region: the stored bytes
    buf[482] = 0  # no extended sparse headers
    buf[483:495] = b"%011o\0" % realsize
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf) + stored + bytes(-len(stored) % 512)


def member(key: str, data: bytes) -> bytes:
    """``key.json`` as tar bytes (header + padded data), no end-of-archive blocks."""
    return tar_blob({"__key__": key, "json": data})


def good_json(i: int) -> bytes:
    return json.dumps({"task": "text", "source": "ext", "answers": ["4"], "messages": [
        user_turn(f"{i}: 2+2?"), assistant_turn("4")]}).encode()


def peak_while_reading(fmt: str, path: Path) -> tuple[list, int]:
    """The reader's items for one shard and the peak Python memory it took to read them."""
    tracemalloc.start()
    try:
        items = list(FORMATS[fmt].read(path, None, Limits()))
        return items, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_sparse_member_is_quarantined_and_never_expanded(tmp_path: Path) -> None:
    realsize = 48 << 20  # under max_member_bytes: the declared size alone must not decide
    data = (member("a", good_json(0)) + gnu_sparse("b.json", b"{}", realsize)
            + member("c", good_json(2)) + bytes(1024))
    path = tmp_path / "in" / "sparse.tar"
    path.parent.mkdir()
    path.write_bytes(data)
    assert len(data) < 16 << 10
    items, peak = peak_while_reading("webdataset", path)
    assert peak < 4 << 20, f"reading a {len(data)}-byte shard took {peak} bytes"
    bad = [i for i in items if isinstance(i, Quarantined)]
    assert [(i.key, i.rule) for i in bad] == [("b", "unsafe_member")]
    assert "sparse" in bad[0].detail
    summary = run("webdataset", path, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.rules) == (3, 2, {"unsafe_member": 1})


def test_a_member_whose_size_runs_past_the_file_is_not_read(tmp_path: Path) -> None:
    forged = tarfile.TarInfo("b.json")
    forged.size = 48 << 20  # a valid header declaring far more than the file holds
    data = (member("a", good_json(0)) + forged.tobuf(tarfile.USTAR_FORMAT) + b"{}"
            + bytes(510) + bytes(1024))
    path = tmp_path / "in" / "forged.tar"
    path.parent.mkdir()
    path.write_bytes(data)
    items, peak = peak_while_reading("webdataset", path)
    assert peak < 4 << 20
    assert [getattr(i, "rule", "accepted") for i in items] == ["accepted", "truncated_tar"]
    assert f"member 'b.json' declares {48 << 20} bytes of data, the file holds 1536" \
        in items[1].detail
    assert "reading stopped at byte 1024" in items[1].detail


def test_an_oversized_extended_header_is_not_read(tmp_path: Path) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 8 << 20  # tarfile would read it whole
    data = (member("a", good_json(0)) + pax.tobuf(tarfile.USTAR_FORMAT) + bytes(4096)
            + bytes(1024))
    path = tmp_path / "in" / "pax.tar"
    path.parent.mkdir()
    path.write_bytes(data)
    items, _ = peak_while_reading("webdataset", path)
    # the header may belong to sample a (a.000.png...): a is the sample being read
    assert [(i.key, i.rule) for i in items] == [("a", "truncated_tar")]
    assert f"an extended header ('x') declares {8 << 20} bytes" in items[0].detail
    first = tmp_path / "in" / "first.tar"  # the same as the very first header
    first.write_bytes(data[1024:])
    [item] = list(FORMATS["webdataset"].read(first, None, Limits()))
    assert item.rule == "unreadable_file" and "extended header" in item.detail


# --- the quarantine's own tar is read the same way -----------------------------------------

def test_a_cut_quarantine_tar_is_an_error_not_a_short_list(tmp_path: Path) -> None:
    with QuarantineWriter(tmp_path / "q", "webdataset") as writer:
        for i in range(3):
            writer.write(Quarantined(f"k{i}", "x.tar", "image_decode", "broken", b"raw" * 10))
    path = tmp_path / "q" / "quarantine-0000.tar"
    assert len(read_quarantine(path)) == 3
    with tarfile.open(path) as tar:
        third = tar.getmembers()[4]  # k2's json header (each entry: json + raw)
    path.write_bytes(path.read_bytes()[: third.offset])
    with pytest.raises(TarDamage) as exc:
        read_quarantine(path)
    assert exc.value.offset == third.offset
