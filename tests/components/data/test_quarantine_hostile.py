"""Hostile and broken input is quarantined with its rule, never crashes nor escapes, and
the counts balance: accepted + quarantined == read."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from components.data.ingest.checks import Limits
from components.data.ingest.examples import EXAMPLES, png, webdataset_samples
from components.data.ingest.run import IngestSummary, ingest
from components.data.quarantine import RULES, QuarantineRateError, read_quarantine
from components.data.shards import read_samples, write_shard


def run(fmt: str, source: Path, out: Path, images: Path | None = None,
        **kw) -> tuple[IngestSummary, list[dict]]:
    """Ingest without the GE suites (tested separately); check the balance and the tar."""
    summary = ingest(fmt, source, out, images, validate=False, max_quarantine_rate=1.0, **kw)
    assert summary.accepted + summary.quarantined == summary.read
    assert sum(summary.rules.values()) == summary.quarantined
    entries = read_quarantine(out / "quarantine" / "quarantine-0000.tar")
    ledger = (out / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    assert len(entries) == len(ledger) == summary.quarantined
    accepted = list(read_samples(sorted((out / "shards").glob("*.tar"))))
    assert len(accepted) == summary.accepted
    return summary, entries


def only_rule(entries: list[dict]) -> str:
    assert len({e["rule"] for e in entries}) == 1, entries
    return entries[0]["rule"]


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (1-bit grey)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def coco_with_image(tmp_path: Path, image_bytes: bytes) -> tuple[Path, Path]:
    """The clean COCO example with its second image file replaced."""
    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    (ex.images / "COCO_val2014_000000000002.jpg").write_bytes(image_bytes)
    return ex.source, ex.images


# --- one test per hostile kind -------------------------------------------------------------

def test_corrupt_image_bytes(tmp_path: Path) -> None:
    source, images = coco_with_image(tmp_path, png(1)[:40] + b"garbage" * 20)
    summary, entries = run("coco-captions", source, tmp_path / "out", images)
    assert (summary.read, summary.accepted) == (3, 2)  # annotation 12 uses image 2
    assert only_rule(entries) == "image_decode" and entries[0]["key"] == "coco-captions-12"
    assert entries[0]["location"].endswith("#annotations[2]")
    assert b'"caption": "A green square."' in entries[0]["raw"]


def test_corrupt_inline_image_bytes_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"texts": ["ok", None], "images": [None, png(0)]},
            {"texts": ["bad", None], "images": [None, b"\x89PNG\r\n\x1a\nnot really"]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet")
    summary, entries = run("obelics", tmp_path / "docs.parquet", tmp_path / "out")
    assert (summary.accepted, only_rule(entries)) == (1, "image_decode")
    assert entries[0]["location"].endswith("docs.parquet#1")


def test_truncated_tar(tmp_path: Path) -> None:
    samples = [s for _ in range(3) for s in webdataset_samples()]
    for i, s in enumerate(samples):
        s.key = f"ext-{i:04d}"
    shard = tmp_path / "in" / "big-0000.tar"
    write_shard(samples, shard)
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[-4]  # a member of the last-but-one sample: cut through its data
    data = shard.read_bytes()[: cut.offset_data + max(1, cut.size // 2)]
    shard.write_bytes(data)
    summary, entries = run("webdataset", shard, tmp_path / "out")
    assert summary.read == summary.accepted + 1 and summary.accepted >= 3
    assert only_rule(entries) == "truncated_tar"
    # the cut member is named, with the offset of its header, and never read
    assert f"reading stopped at byte {cut.offset} of {len(data)}" in entries[0]["detail"]
    assert f"member {cut.name!r} declares {cut.size} bytes" in entries[0]["detail"]


def _tar_with(path: Path, members: list[tuple[str, bytes]], link: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("lnk.json")
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
    return path


def test_tar_member_with_parent_or_absolute_path(tmp_path: Path) -> None:
    good = json.dumps({"task": "text", "source": "ext", "answers": ["4"], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "4"}]}]}).encode()
    shard = _tar_with(tmp_path / "in" / "evil.tar", [
        ("ok.json", good),
        ("../escape.json", good),
        ("/tmp/absolute.json", good),
        ("../../x.000.png", png(0)),
    ], link="/etc/passwd")
    out = tmp_path / "work" / "out"
    summary, entries = run("webdataset", shard, out)
    assert (summary.read, summary.accepted) == (5, 1)
    assert {e["rule"] for e in entries} == {"unsafe_path"}
    assert sorted(e["key"] for e in entries) == ["../../x", "../escape", "/tmp/absolute", "lnk"]
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "work" / "x.000.png").exists()
    assert all(p.is_relative_to(out) for p in out.rglob("*"))


def test_image_path_with_parent_absolute_or_symlink(tmp_path: Path) -> None:
    images = tmp_path / "in" / "images"
    images.mkdir(parents=True)
    (images / "ok.png").write_bytes(png(0))
    (tmp_path / "secret.png").write_bytes(png(1))
    os.symlink(tmp_path / "secret.png", images / "link.png")
    rows = [{"id": i, "image": p, "conversations": [{"from": "human", "value": "<image>Hi"},
                                                   {"from": "gpt", "value": "Hello"}]}
            for i, p in enumerate(["ok.png", "../secret.png", str(tmp_path / "secret.png"),
                                   "link.png", "C:\\secret.png"])]
    (tmp_path / "in" / "llava.json").write_text(json.dumps(rows))
    summary, entries = run("llava", tmp_path / "in" / "llava.json", tmp_path / "out", images)
    assert (summary.read, summary.accepted) == (5, 1)
    assert [e["rule"] for e in entries] == ["unsafe_path"] * 4
    assert "outside" in entries[2]["detail"]  # the symlink resolves out of --images


@pytest.mark.parametrize("pixels", ["warning", "error"])
def test_decompression_bomb(pixels: str, tmp_path: Path) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    side = int((limit * (1.2 if pixels == "warning" else 2.5)) ** 0.5)
    source, images = coco_with_image(tmp_path, png_header(side, side))
    # sides far above the bomb so that Pillow's check, not the size rule, decides
    summary, entries = run("coco-captions", source, tmp_path / "out", images,
                           limits=Limits(max_side=1_000_000))
    assert summary.accepted == 2 and only_rule(entries) == "decompression_bomb"
    assert "decompression bomb" in entries[0]["detail"].lower()
    assert Image.MAX_IMAGE_PIXELS == limit


def test_non_utf8_text(tmp_path: Path) -> None:
    lines = [b'{"prompt": "ok?", "chosen": "yes", "rejected": "no"}',
             b'{"prompt": "caf\xe9?", "chosen": "yes", "rejected": "no"}',
             b'{"prompt": "esc\\udc80aped", "chosen": "yes", "rejected": "no"}']
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary, entries = run("preference", tmp_path / "p.jsonl", tmp_path / "out")
    assert summary.accepted == 1 and only_rule(entries) == "invalid_utf8"
    assert [e["location"].rsplit(":", 1)[1] for e in entries] == ["2", "3"]
    assert entries[0]["raw"] == lines[1]
    # a JSON document with undecodable bytes: only the record holding them is quarantined
    ex = EXAMPLES["coco-captions"](tmp_path / "coco")
    ex.source.write_bytes(ex.source.read_bytes().replace(b"A green", b"A gr\xffen"))
    summary, entries = run("coco-captions", ex.source, tmp_path / "out2", ex.images)
    assert summary.accepted == 2 and only_rule(entries) == "invalid_utf8"


EMPTY_FILES = {"coco-captions": "c.json", "preference": "p.jsonl", "obelics": "o.parquet",
               "webdataset": "w.tar", "vqav2": "src/a_questions.json",
               "trl-preference": "t.jsonl", "webdataset-captions": "00000.tar"}


@pytest.mark.parametrize("fmt", list(EMPTY_FILES))
def test_empty_file(fmt: str, tmp_path: Path) -> None:
    name = EMPTY_FILES[fmt]
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    if fmt == "vqav2":
        (path.parent / "a_annotations.json").write_text('{"annotations": []}')
        path = path.parent
    summary, entries = run(fmt, path, tmp_path / "out")
    assert (summary.read, summary.quarantined) == (1, 1)
    assert only_rule(entries) == "empty_file"


def test_wrong_type_fields(tmp_path: Path) -> None:
    rows = [{"id": 1, "conversations": "not a list"},
            {"id": 2, "conversations": [{"from": "human", "value": 42}]},
            {"id": 3, "image": 7, "conversations": []},
            ["not", "an", "object"],
            {"id": 5, "conversations": [{"from": "robot", "value": "hi"}]}]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    summary, entries = run("llava", tmp_path / "l.json", tmp_path / "out")
    assert (summary.read, summary.accepted) == (5, 0)
    assert only_rule(entries) == "wrong_type"
    assert "'conversations' is str, expected list" in entries[0]["detail"]


# --- the other rules ---------------------------------------------------------------------

def _llava(tmp_path: Path, rows: list[dict], **kw) -> tuple[IngestSummary, list[dict]]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (images / "a.png").write_bytes(png(0))
    (images / "tiny.png").write_bytes(png(0, (4, 4)))
    (tmp_path / "l.json").write_text(json.dumps(rows))
    return run("llava", tmp_path / "l.json", tmp_path / "out", images, **kw)


def _conv(user: str = "<image>Q?", reply: str = "A.") -> list[dict]:
    return [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]


RULE_CASES = {
    "placeholder_mismatch": {"id": "a", "image": "a.png", "conversations": _conv("no token")},
    "empty_answer": {"id": "b", "image": "a.png", "conversations": _conv(reply="  ")},
    "text_length": {"id": "c", "image": "a.png", "conversations": _conv(reply="x" * 300)},
    "image_missing": {"id": "d", "image": "nope.png", "conversations": _conv()},
    "image_size": {"id": "e", "image": "tiny.png", "conversations": _conv()},
    "missing_field": {"id": "f", "image": "a.png"},
    "duplicate_key": {"id": "ok", "image": "a.png", "conversations": _conv()},
}


def test_each_rule_names_its_record(tmp_path: Path) -> None:
    rows = [{"id": "ok", "image": "a.png", "conversations": _conv()}, *RULE_CASES.values()]
    summary, entries = _llava(tmp_path, rows, limits=Limits(max_text_chars=200))
    assert (summary.read, summary.accepted) == (len(rows), 1)
    assert {e["rule"]: e["key"] for e in entries} == {
        rule: f"llava-{row['id']}" for rule, row in RULE_CASES.items()}
    assert summary.rules == dict.fromkeys(sorted(RULE_CASES), 1)
    assert summary.examples["duplicate_key"] == ["llava-ok"]


def test_unknown_task_image_count_and_missing_json_in_tar(tmp_path: Path) -> None:
    samples = webdataset_samples()
    samples[1].record["task"] = "no-such-task"
    samples.append(webdataset_samples()[1])
    samples[2].key, samples[2].record["task"] = "ext-0002", "vqa"  # a VQA sample without image
    shard = tmp_path / "s.tar"
    write_shard(samples, shard)
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("orphan.000.png")
        info.size = len(png(0))
        tar.addfile(info, io.BytesIO(png(0)))
    summary, entries = run("webdataset", shard, tmp_path / "out")
    assert (summary.read, summary.accepted) == (4, 1)
    assert [(e["key"], e["rule"]) for e in entries] == [
        ("ext-0001", "unknown_task"), ("ext-0002", "image_count"), ("orphan", "missing_field")]


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"images": [], "annotations": [')
    summary, entries = run("coco-captions", tmp_path / "c.json", tmp_path / "o1")
    assert (summary.read, only_rule(entries)) == (1, "unreadable_file")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    summary, entries = run("cauldron", tmp_path / "x.parquet", tmp_path / "o2")
    assert (summary.read, only_rule(entries)) == (1, "unreadable_file")
    (tmp_path / "t.tar").write_bytes(b"\x01" * 700)
    summary, entries = run("webdataset", tmp_path / "t.tar", tmp_path / "o3")
    assert (summary.read, only_rule(entries)) == (1, "unreadable_file")
    summary, entries = run("webdataset-captions", tmp_path / "t.tar", tmp_path / "o4")
    assert (summary.read, only_rule(entries)) == (1, "unreadable_file")


def test_every_rule_has_a_description() -> None:
    assert all(isinstance(v, str) and v for v in RULES.values())


# --- threshold and Great Expectations ----------------------------------------------------

def test_quarantine_rate_threshold_fails_with_numbers_rule_and_keys(tmp_path: Path) -> None:
    source, images = coco_with_image(tmp_path, b"not an image")
    with pytest.raises(QuarantineRateError) as exc:
        ingest("coco-captions", source, tmp_path / "out", images, max_quarantine_rate=0.2)
    message = str(exc.value)
    assert "quarantined 1 of 3 records (33.3%), above the threshold 20.0%" in message
    assert "image_decode 1 (e.g. coco-captions-12)" in message
    summary = exc.value.summary
    assert (summary.read, summary.accepted, summary.quarantined) == (3, 2, 1)
    assert summary.validation == {"ledger": False, "manifest": True}
    # a run that fails its gate is kept beside OUT for inspection, never published as OUT
    rejected = tmp_path / "out.rejected"
    assert summary.out == str(rejected) and not (tmp_path / "out").exists()
    assert f"see {rejected}/quarantine/quarantine.jsonl" in message
    report = json.loads((rejected / "validation.json").read_text())
    [failure] = report["ledger"]["failures"]
    assert (failure["expectation"], failure["column"]) == ("expect_column_values_to_be_in_set",
                                                           "status")
    ok = ingest("coco-captions", source, tmp_path / "out2", images, max_quarantine_rate=0.34)
    assert ok.validation == {"ledger": True, "manifest": True} and ok.quarantined == 1


def test_an_unforeseen_failure_is_quarantined_not_raised() -> None:
    from components.data.ingest.records import guarded

    def explode():
        raise ZeroDivisionError("surprise")

    item = guarded("k", "f.json[3]", b"{}", explode)
    assert (item.key, item.location, item.rule) == ("k", "f.json[3]", "malformed_record")
    assert "ZeroDivisionError: surprise" in item.detail
