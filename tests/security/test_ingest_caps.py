"""What one record may cost is capped (``ingest.limits.Limits``): members per sample, bytes
per member, images per record, bytes per record. A record over a cap is quarantined as
``over_limit`` naming the cap, and the ingest goes on; a long id is hashed, never fatal."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from components.data.ingest.checks import Limits
from components.data.ingest.examples import png
from components.data.ingest.fields import MAX_KEY_BYTES, bounded_key, sample_key
from components.data.ingest.run import IngestSummary, ingest
from components.data.quarantine import read_quarantine, write_tar_sample
from components.data.sample import assistant_turn, user_turn


def run(fmt: str, source: Path, out: Path, images: Path | None = None,
        **kw) -> tuple[IngestSummary, list[str], list[dict]]:
    """Ingest (no GE, any rate): the summary, the accepted keys and the quarantine rows, the
    balance counted from the written files."""
    summary = ingest(fmt, source, out, images, validate=False, max_quarantine_rate=1.0, **kw)
    keys = []
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            keys += [m.name[: -len(".json")] for m in tar.getmembers() if m.name.endswith(".json")]
    rows = [json.loads(line) for line in
            (out / "quarantine" / "quarantine.jsonl").read_text().splitlines()]
    assert len(keys) + len(rows) == summary.read
    assert len(read_quarantine(out / "quarantine" / "quarantine-0000.tar")) == len(rows)
    return summary, keys, rows


def cauldron_jsonl(path: Path, image_counts: list[int]) -> Path:
    """One Cauldron row per entry: that many references to the same small image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "a.png").write_bytes(png(0))
    rows = [{"id": f"r{i}", "images": ["a.png"] * n,
             "texts": [{"user": "What colour?", "assistant": "Red."}]}
            for i, n in enumerate(image_counts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def text_json(i: int) -> bytes:
    return json.dumps({"task": "text", "source": "ext", "answers": ["4"],
                       "messages": [user_turn(f"{i}: 2+2?"), assistant_turn("4")]}).encode()


def tar_of(path: Path, samples: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            write_tar_sample(tar, sample)
    return path


def test_the_caps_are_named_in_one_place() -> None:
    limits = Limits()
    assert (limits.max_members_per_sample, limits.max_member_bytes, limits.max_images_per_record,
            limits.max_record_bytes) == (128, 64 << 20, 64, 256 << 20)
    assert limits.max_images_per_record < 1000  # shard members are named 000.png ... 999.png


@pytest.mark.parametrize("n_images", [65, 1001])
def test_a_record_with_too_many_images_is_quarantined_and_the_ingest_goes_on(
        n_images: int, tmp_path: Path) -> None:
    source = cauldron_jsonl(tmp_path / "in" / "c.jsonl", [1, n_images, 2])
    summary, keys, rows = run("cauldron", source, tmp_path / "out")
    assert keys == ["cauldron-r0", "cauldron-r2"]
    assert [(r["key"], r["rule"]) for r in rows] == [("cauldron-r1", "over_limit")]
    assert f"record images: {n_images} over max_images_per_record=64" in rows[0]["detail"]


def test_a_sample_with_too_many_members_is_quarantined(tmp_path: Path) -> None:
    flood = {"__key__": "flood", "json": text_json(0),
             **{f"m{i:03d}": b"x" for i in range(200)}}
    path = tar_of(tmp_path / "in" / "s.tar", [
        {"__key__": "a", "json": text_json(1)}, flood, {"__key__": "b", "json": text_json(2)}])
    summary, keys, rows = run("webdataset", path, tmp_path / "out")
    assert keys == ["a", "b"]
    assert [(r["key"], r["rule"]) for r in rows] == [("flood", "over_limit")]
    assert "members: 129 over max_members_per_sample=128" in rows[0]["detail"]


def test_a_member_over_its_byte_cap_is_never_read(tmp_path: Path) -> None:
    big = {"__key__": "big", "json": text_json(0), "000.png": png(0) + bytes(4096)}
    path = tar_of(tmp_path / "in" / "s.tar", [big, {"__key__": "ok", "json": text_json(1)}])
    summary, keys, rows = run("webdataset", path, tmp_path / "out",
                              limits=Limits(max_member_bytes=2048))
    assert keys == ["ok"] and rows[0]["rule"] == "over_limit"
    assert f"member 'big.000.png' bytes: {len(big['000.png'])} over max_member_bytes=2048" \
        in rows[0]["detail"]


def test_an_image_file_over_the_byte_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    source = cauldron_jsonl(tmp_path / "in" / "c.jsonl", [1])
    (source.parent / "a.png").write_bytes(png(0) + bytes(8192))
    summary, keys, rows = run("cauldron", source, tmp_path / "out",
                              limits=Limits(max_member_bytes=4096))
    assert keys == [] and rows[0]["rule"] == "over_limit"
    assert "over max_member_bytes=4096" in rows[0]["detail"]


def test_a_sample_over_the_record_byte_cap_is_quarantined(tmp_path: Path) -> None:
    heavy = {"__key__": "heavy", "json": text_json(0),
             **{f"{i:03d}.png": png(i) for i in range(3)}}
    path = tar_of(tmp_path / "in" / "s.tar", [heavy, {"__key__": "ok", "json": text_json(1)}])
    cap = len(text_json(0)) + 2 * len(png(0))
    summary, keys, rows = run("webdataset", path, tmp_path / "out",
                              limits=Limits(max_record_bytes=cap))
    assert keys == ["ok"] and rows[0]["rule"] == "over_limit"
    assert f"over max_record_bytes={cap}" in rows[0]["detail"]


def test_a_record_whose_images_add_up_over_the_byte_cap_is_quarantined(tmp_path: Path) -> None:
    source = cauldron_jsonl(tmp_path / "in" / "c.jsonl", [1, 8])
    summary, keys, rows = run("cauldron", source, tmp_path / "out",
                              limits=Limits(max_record_bytes=4 * len(png(0))))
    assert keys == ["cauldron-r0"]
    assert rows[0]["key"] == "cauldron-r1" and rows[0]["rule"] == "over_limit"
    assert "record bytes (row + images)" in rows[0]["detail"]


def test_a_jsonl_line_over_the_record_byte_cap_is_skipped_unread(tmp_path: Path) -> None:
    ok = json.dumps({"prompt": "Is 3 > 2?", "chosen": "Yes.", "rejected": "No."})
    long = json.dumps({"prompt": "x" * 50_000, "chosen": "a", "rejected": "b"})
    source = tmp_path / "p.jsonl"
    source.write_text(f"{ok}\n{long}\n{ok.replace('3 > 2', '4 > 2')}\n")
    summary, keys, rows = run("preference", source, tmp_path / "out",
                              limits=Limits(max_record_bytes=1000))
    assert len(keys) == 2
    assert [(r["key"], r["rule"]) for r in rows] == [("p.jsonl:2", "over_limit")]
    assert f"line of {len(long) + 1} bytes over max_record_bytes=1000" in rows[0]["detail"]
    [entry] = read_quarantine(tmp_path / "out" / "quarantine" / "quarantine-0000.tar")
    assert entry["raw"] == long.encode()[:1001]  # the head read (cap + 1 bytes), not the line


# --- long ids --------------------------------------------------------------------------------

def test_long_keys_are_bounded_with_a_stable_hash() -> None:
    long = "llava-" + "x" * 300
    assert len(bounded_key(long).encode()) == MAX_KEY_BYTES
    assert bounded_key(long) == bounded_key(long) and bounded_key(long) != bounded_key(long + "y")
    assert bounded_key("llava-short") == "llava-short"
    assert len(sample_key("obelics", "é" * 100).encode()) <= MAX_KEY_BYTES


def test_a_record_id_of_hundreds_of_characters_is_ingested(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(0))
    ids = ["i" * 200, "i" * 200 + "-other", "short"]
    rows = [{"id": i, "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>What colour?"}, {"from": "gpt", "value": "Red."}]}
        for i in ids]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    summary, keys, bad = run("llava", tmp_path / "l.json", tmp_path / "out", tmp_path)
    assert (summary.accepted, bad) == (3, [])
    assert keys[2] == "llava-short" and len(set(keys)) == 3
    assert all(len(k) == MAX_KEY_BYTES and k.startswith("llava-iii") for k in keys[:2])
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text()
                .splitlines()]
    assert [r["key"] for r in manifest] == keys


def test_a_webdataset_key_with_undecodable_bytes_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "in" / "s.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in (b"ok.json", b"caf\xe9.json"):
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            data = text_json(len(name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    summary, keys, rows = run("webdataset", path, tmp_path / "out")
    assert keys == ["ok"] and [r["rule"] for r in rows] == ["invalid_utf8"]
