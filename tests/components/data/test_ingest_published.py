"""Published layouts end to end: img2dataset caption shards, OBELICS with image URLs resolved
against a local folder (per-image quarantine), TRL's preference rows. Counts are taken from
the written files: read = accepted + quarantined, and one image-ledger row per dropped image."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest

from components.data.ingest.examples import (
    EXAMPLES,
    obelics_urls,
    png,
    sha1_name,
    trl_preference_rows,
    webdataset_captions_members,
)
from components.data.ingest.images import ImageLoader, ImageRef, url_file_names
from components.data.ingest.run import IMAGE_LEDGER, IngestSummary, ingest
from components.data.quarantine import Reject, read_quarantine, write_tar_sample
from components.data.sample import Sample, image_placeholders
from components.data.shards import read_samples


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(fmt: str, source: Path, out: Path, images: Path | None = None, **kw,
        ) -> tuple[IngestSummary, list[Sample], list[dict], list[dict]]:
    """Ingest; check the balance from the written files; (summary, accepted samples,
    quarantine entries, image-ledger rows)."""
    kw.setdefault("validate", False)
    summary = ingest(fmt, source, out, images, max_quarantine_rate=1.0, **kw)
    accepted = list(read_samples(sorted((out / "shards").glob("*.tar"))))
    entries = read_quarantine(out / "quarantine" / "quarantine-0000.tar")
    ledger = lines(out / "quarantine" / "quarantine.jsonl")
    dropped = lines(out / "quarantine" / IMAGE_LEDGER)
    assert len(entries) == len(ledger) == summary.quarantined
    assert len(accepted) == summary.accepted
    assert len(accepted) + len(ledger) == summary.read
    assert len(dropped) == summary.images_dropped == sum(summary.images_dropped_rules.values())
    written = json.loads((out / "summary.json").read_text())
    assert written["images_dropped"] == summary.images_dropped
    return summary, accepted, entries, dropped


def rules_by_key(entries: list[dict]) -> dict[str, str]:
    return {e["key"]: e["rule"] for e in entries}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --- webdataset-captions ------------------------------------------------------------------

def _caption_tar(path: Path, samples: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            write_tar_sample(tar, sample)
    return path


def test_webdataset_captions_map_to_caption_records(tmp_path: Path) -> None:
    ex = EXAMPLES["webdataset-captions"](tmp_path / "in")
    summary, accepted, _, _ = run("webdataset-captions", ex.source.parent, tmp_path / "out",
                                  validate=True)
    assert (summary.read, summary.accepted) == (3, 3)  # a folder of shards
    assert summary.validation == {"ledger": True, "manifest": True}
    coco = EXAMPLES["coco-captions"](tmp_path / "coco")
    ingest("coco-captions", coco.source, tmp_path / "coco-out", coco.images, validate=False)
    coco_record = next(read_samples(sorted((tmp_path / "coco-out" / "shards").glob("*.tar")))).record
    first = accepted[0].record
    assert first["messages"][0] == coco_record["messages"][0]  # the same prompt and layout
    assert [s.key for s in accepted] == [f"webdataset-captions-00000000{i}" for i in range(3)]
    assert [s.record["answers"] for s in accepted] == [["A red square."], ["A green square."],
                                                       ["A blue square."]]
    assert first["url"] == "https://example.com/0.jpg" and "url" not in accepted[2].record
    for s in accepted:
        assert s.record["task"] == "caption" and len(s.images) == 1
        assert s.record["messages"][1]["content"] == [{"type": "text",
                                                       "text": s.record["answers"][0]}]
    # a txt caption wins over the json's
    members = webdataset_captions_members()[:1]
    members[0]["json"] = json.dumps({"caption": "from json"}).encode()
    _, accepted, _, _ = run("webdataset-captions", _caption_tar(tmp_path / "t.tar", members),
                            tmp_path / "out2")
    assert accepted[0].record["answers"] == ["A red square."]


def test_webdataset_captions_hostile_samples_are_quarantined_with_their_rule(tmp_path: Path,
                                                                            ) -> None:
    good = webdataset_captions_members()[0]
    cases = {
        "bad-json": {"png": png(0), "json": b'{"caption": "unclosed'},
        "bad-txt": {"png": png(0), "txt": b"caf\xe9"},
        "no-image": {"txt": b"A caption without its picture.", "json": b"{}"},
        "two-images": {"png": png(0), "jpg": png(1, fmt="JPEG"), "txt": b"Which one?"},
        "no-caption": {"png": png(0), "json": json.dumps({"url": "https://x.org/a.jpg"}).encode()},
        "empty-caption": {"png": png(0), "txt": b"   "},
        "wrong-caption": {"png": png(0), "json": b'{"caption": 42}'},
        "json-list": {"png": png(0), "json": b'["caption"]'},
        "bad-pixels": {"jpg": b"\xff\xd8\xff not a jpeg", "txt": b"Broken."},
    }
    expected = {"bad-json": "unreadable_file", "bad-txt": "invalid_utf8",
                "no-image": "missing_field", "two-images": "image_count",
                "no-caption": "missing_field", "empty-caption": "empty_answer",
                "wrong-caption": "wrong_type", "json-list": "wrong_type",
                "bad-pixels": "image_decode"}
    samples = [good] + [{"__key__": k, **members} for k, members in cases.items()]
    shard = _caption_tar(tmp_path / "in" / "00000.tar", samples)
    with tarfile.open(shard, "a") as tar:  # an escaping member
        info = tarfile.TarInfo("../evil.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    summary, accepted, entries, _ = run("webdataset-captions", shard, tmp_path / "out")
    assert (summary.read, summary.accepted) == (len(samples) + 1, 1)
    assert rules_by_key(entries) == {
        **{f"webdataset-captions-{k}": rule for k, rule in expected.items()},
        "webdataset-captions-_evil": "unsafe_path"}
    by_key = {e["key"]: e for e in entries}
    assert by_key["webdataset-captions-bad-json"]["raw"] == b'{"caption": "unclosed'
    assert "no image member" in by_key["webdataset-captions-no-image"]["detail"]
    assert not (tmp_path / "evil.txt").exists()


def test_webdataset_captions_truncated_shard_keeps_the_samples_before(tmp_path: Path) -> None:
    ex = EXAMPLES["webdataset-captions"](tmp_path / "in")
    with tarfile.open(ex.source) as tar:
        last = tar.getmembers()[-1]
    ex.source.write_bytes(ex.source.read_bytes()[: last.offset_data + 3])
    summary, accepted, entries, _ = run("webdataset-captions", ex.source, tmp_path / "out")
    assert [e["rule"] for e in entries] == ["truncated_tar"] and len(accepted) == 2


# --- OBELICS with image URLs --------------------------------------------------------------

def test_url_file_names_hash_then_basename() -> None:
    url = "https://x.org/a/Cat%20pic.JPG?size=2#top"
    assert url_file_names(url) == [sha1_name(url, ".jpg"), "Cat pic.JPG"]
    assert url_file_names("https://x.org/") == [sha1_name("https://x.org/")]
    traversal = "https://x.org/..%2F..%2Fetc%2Fpasswd"
    assert url_file_names(traversal) == [sha1_name(traversal)]  # no name with a separator
    with pytest.raises(Reject) as exc:
        url_file_names("http://[::1/a.png")
    assert exc.value.rule == "image_missing"


def test_obelics_urls_resolve_locally_without_network(tmp_path: Path, no_network: None) -> None:
    ex = obelics_urls(tmp_path / "in")
    summary, accepted, _, dropped = run("obelics", ex.source, tmp_path / "out", ex.images,
                                        validate=True)
    assert (summary.accepted, summary.images_dropped, dropped) == (1, 0, [])
    assert summary.validation == {"ledger": True, "manifest": True}
    [doc] = accepted
    assert [p["type"] for p in doc.record["messages"][0]["content"]] == [
        "text", "image", "text", "image", "text"]
    assert [im.getpixel((0, 0)) for im in doc.images] == [(255, 0, 0), (0, 128, 0)]
    # without --images the URLs resolve against the source's folder
    for f in ex.images.iterdir():
        os.replace(f, ex.source.parent / f.name)
    summary, *_ = run("obelics", ex.source, tmp_path / "out2")
    assert (summary.accepted, summary.images_dropped) == (1, 0)


def _obelics_docs(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(parents=True)
    url = "https://img.example.com/{}.png".format
    for name in ("a", "c", "solo"):
        (images / f"{name}.png").write_bytes(png(0))
    (images / sha1_name(url("b"), ".png")).write_bytes(png(1))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "tiny.png").write_bytes(png(2, (4, 4)))
    (tmp_path / "outside.png").write_bytes(png(3))
    os.symlink(tmp_path / "outside.png", images / "escape.png")
    rows = [
        # one missing image out of three: kept with two
        {"id": "three", "texts": ["Start.", None, "Middle.", None, None, "End."],
         "images": [None, url("a"), None, url("missing"), url("b"), None]},
        # every kind of per-image failure in one kept document
        {"id": "hostile", "texts": ["Intro.", None, None, None, None, None, "Outro."],
         "images": [None, url("c"), url("broken"), url("tiny"), "http://[::1/x.png",
                    url("escape"), None]},
        # no image left: the document is quarantined, with the image's rule
        {"id": "none-left", "texts": ["Alone.", None], "images": [None, url("gone")]},
        # no text at all: quarantined as a whole
        {"id": "no-text", "texts": [None], "images": [url("solo")]},
    ]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return source, images


def test_obelics_unresolved_images_are_dropped_per_image(tmp_path: Path, no_network: None) -> None:
    source, images = _obelics_docs(tmp_path)
    summary, accepted, entries, dropped = run("obelics", source, tmp_path / "out", images)
    assert (summary.read, summary.accepted, summary.quarantined) == (4, 2, 2)
    three, hostile = accepted
    assert three.key == "obelics-three" and len(three.images) == 2
    assert [p.get("text", "<image>") for p in three.record["messages"][0]["content"]] == [
        "Start.", "<image>", "Middle.", "<image>", "End."]
    assert [im.getpixel((0, 0)) for im in three.images] == [(255, 0, 0), (0, 128, 0)]
    assert image_placeholders(hostile.record["messages"]) == len(hostile.images) == 1
    rows = {(d["key"], d["position"]): d for d in dropped}
    assert {k: d["rule"] for k, d in rows.items()} == {
        ("obelics-three", 3): "image_missing",
        ("obelics-hostile", 2): "image_decode",
        ("obelics-hostile", 3): "image_size",
        ("obelics-hostile", 4): "image_missing",
        ("obelics-hostile", 5): "unsafe_path",
    }
    missing = rows["obelics-three", 3]
    assert missing["url"] == "https://img.example.com/missing.png"
    assert missing["location"].endswith("docs.jsonl:1")
    assert sha1_name(missing["url"], ".png") in missing["detail"] and "missing.png" in missing["detail"]
    assert summary.images_dropped_rules == {"image_decode": 1, "image_missing": 2,
                                            "image_size": 1, "unsafe_path": 1}
    assert rules_by_key(entries) == {"obelics-none-left": "image_missing",
                                     "obelics-no-text": "empty_answer"}
    none_left = next(e for e in entries if e["key"] == "obelics-none-left")
    assert "position 1 image_missing" in none_left["detail"] and "gone.png" in none_left["detail"]
    # the record ledger counts documents once: no image row in quarantine.jsonl
    assert {e["key"] for e in lines(tmp_path / "out" / "quarantine" / "quarantine.jsonl")} == {
        "obelics-none-left", "obelics-no-text"}


def test_obelics_dropped_images_pass_the_suites(tmp_path: Path) -> None:
    source, images = _obelics_docs(tmp_path)
    summary = ingest("obelics", source, tmp_path / "out", images, max_quarantine_rate=0.5)
    assert summary.validation == {"ledger": True, "manifest": True}
    assert summary.images_dropped == 5 and summary.quarantined == 2
    manifest = lines(tmp_path / "out" / "manifest.jsonl")
    assert [(r["n_images"], r["n_image_placeholders"]) for r in manifest] == [(2, 2), (1, 1)]


def test_image_loader_never_reads_a_url_outside_the_root(tmp_path: Path) -> None:
    loader = ImageLoader(tmp_path / "images")
    (tmp_path / "images").mkdir()
    (tmp_path / "passwd").write_bytes(png(0))
    for url in ("file:///etc/passwd", "https://x.org/../passwd", "https://x.org/..%2Fpasswd"):
        with pytest.raises(Reject) as exc:
            loader.read_bytes(ImageRef(url=url))
        assert exc.value.rule == "image_missing", url


# --- TRL preference -----------------------------------------------------------------------

def test_trl_preference_maps_every_form(tmp_path: Path) -> None:
    ex = EXAMPLES["trl-preference"](tmp_path / "in")
    summary, accepted, _, _ = run("trl-preference", ex.source, tmp_path / "out", ex.images)
    assert summary.accepted == 4
    image, multi, standard, implicit = (s.record for s in accepted)
    assert image["messages"] == trl_preference_rows()[0]["prompt"]
    assert (image["chosen"], image["rejected"], image["answers"]) == ("Red.", "Blue.", ["Red."])
    assert [m["role"] for m in multi["messages"]] == ["system", "user", "assistant", "user"]
    assert multi["messages"][-1]["content"] == [{"type": "text", "text": "Is 2 > 3?"}]
    assert (multi["chosen"], multi["rejected"]) == ("No.", "Yes.")
    # TRL places images before the first user text when the prompt has no image part
    assert standard["messages"] == [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    assert len(accepted[2].images) == 1 and accepted[2].images[0].getpixel((0, 0)) == (0, 128, 0)
    assert implicit["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Is 3 > 2?"}]}]
    assert (implicit["chosen"], implicit["rejected"]) == ("Yes.", "No.")


def test_trl_preference_parquet_with_image_structs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                    {"type": "text", "text": "Colour?"}]}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]}],
           "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Green."}]}],
           "images": [{"bytes": png(0), "path": None}]}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "train.parquet")
    summary, accepted, _, _ = run("trl-preference", tmp_path / "train.parquet", tmp_path / "out",
                                  validate=True)
    assert summary.validation == {"ledger": True, "manifest": True}
    assert accepted[0].record["messages"][0]["content"][0] == {"type": "image"}
    assert len(accepted[0].images) == 1


def _say(role: str, text: object) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


TRL_CASES = {
    "prompt-number": ({"prompt": 3, "chosen": "a", "rejected": "b"}, "wrong_type"),
    "no-chosen": ({"prompt": "q", "rejected": "b"}, "missing_field"),
    "two-turn-chosen": ({"prompt": [_say("user", "q")],
                         "chosen": [_say("assistant", "a"), _say("assistant", "b")],
                         "rejected": [_say("assistant", "c")]}, "wrong_type"),
    "user-chosen": ({"prompt": [_say("user", "q")], "chosen": [_say("user", "a")],
                     "rejected": [_say("assistant", "c")]}, "wrong_type"),
    "robot-role": ({"prompt": [_say("robot", "q")], "chosen": "a", "rejected": "b"},
                   "wrong_type"),
    "audio-part": ({"prompt": [{"role": "user", "content": [{"type": "audio"}]}],
                    "chosen": "a", "rejected": "b"}, "wrong_type"),
    "text-not-str": ({"prompt": [_say("user", 7)], "chosen": "a", "rejected": "b"},
                     "wrong_type"),
    "ends-assistant": ({"prompt": [_say("user", "q"), _say("assistant", "a")],
                        "chosen": "a", "rejected": "b"}, "wrong_type"),
    "image-answer": ({"prompt": "q", "chosen": [{"role": "assistant", "content": [
        {"type": "image"}]}], "rejected": "b"}, "wrong_type"),
    "two-placeholders": ({"prompt": [{"role": "user", "content": [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]}],
        "chosen": "a", "rejected": "b", "images": ["p.png"]}, "placeholder_mismatch"),
    "empty-chosen": ({"prompt": "q", "chosen": [_say("assistant", "  ")], "rejected": "b"},
                     "empty_answer"),
    "missing-image": ({"prompt": "q", "chosen": "a", "rejected": "b", "images": ["nope.png"]},
                      "image_missing"),
    "images-not-list": ({"prompt": "q", "chosen": "a", "rejected": "b", "images": "p.png"},
                        "wrong_type"),
    "no-shared-prompt": ({"chosen": [_say("assistant", "a")],
                          "rejected": [_say("assistant", "b")]}, "missing_field"),
    "empty-prompt": ({"prompt": [], "chosen": "a", "rejected": "b"}, "missing_field"),
}


def test_trl_preference_malformed_rows_are_quarantined_with_their_rule(tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(png(0))
    good = {"id": "good", "prompt": [_say("user", "q")], "chosen": [_say("assistant", "a")],
            "rejected": [_say("assistant", "b")], "images": ["p.png"]}
    rows = [good] + [{"id": k, **row} for k, (row, _) in TRL_CASES.items()]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n"
    (tmp_path / "dpo.jsonl").write_text(text)
    summary, accepted, entries, _ = run("trl-preference", tmp_path / "dpo.jsonl",
                                        tmp_path / "out", tmp_path)
    assert (summary.read, summary.accepted) == (len(rows) + 1, 1)
    assert accepted[0].record["messages"][0]["content"][0] == {"type": "image"}
    assert rules_by_key(entries) == {
        **{f"trl-preference-{k}": rule for k, (_, rule) in TRL_CASES.items()},
        f"dpo.jsonl:{len(rows) + 1}": "unreadable_file"}
    details = {e["key"]: e["detail"] for e in entries}
    assert "one assistant turn" in details["trl-preference-two-turn-chosen"]
    assert "ends with an assistant turn" in details["trl-preference-ends-assistant"]
