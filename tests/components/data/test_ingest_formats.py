"""Each ingest format: a clean fixture ingests fully, passes both GE suites and round-trips
through the shard reader; the CLI prints the JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.ingest import FORMATS, ingest_tasks
from components.data.ingest.examples import EXAMPLES, VARIANTS, obelics_jsonl
from components.data.ingest.run import ingest
from components.data.sample import image_placeholders
from components.data.shards import read_samples
from components.data.validation import known_tasks

RED = (255, 0, 0)


WRITERS = {**{fmt: (fmt, write) for fmt, write in EXAMPLES.items()}, **VARIANTS}


def test_every_format_has_an_example() -> None:
    assert set(EXAMPLES) == set(FORMATS)


@pytest.mark.parametrize("name", list(WRITERS))
def test_clean_fixture_ingests_fully_and_round_trips(name: str, tmp_path: Path) -> None:
    fmt, write = WRITERS[name]
    ex = write(tmp_path / "in")
    out = tmp_path / "out"
    summary = ingest(fmt, ex.source, out, ex.images)
    assert (summary.read, summary.accepted, summary.quarantined) == (ex.records, ex.records, 0)
    assert summary.rules == {} and summary.validation == {"ledger": True, "manifest": True}
    report = json.loads((out / "validation.json").read_text())
    assert report["manifest"]["statistics"]["evaluated_expectations"] > 20
    assert report["ledger"]["n_rows"] == ex.records

    samples = list(read_samples(sorted((out / "shards").glob("*.tar"))))
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [s.key for s in samples] == [row["key"] for row in manifest]
    assert len({s.key for s in samples}) == ex.records
    tasks = FORMATS[fmt].tasks
    for s in samples:
        assert image_placeholders(s.record["messages"]) == len(s.images)
        assert not tasks or (s.record["task"] in tasks and s.record["source"] == fmt)
        assert all(im.mode == "RGB" and im.size == (32, 24) for im in s.images)
    assert sum(len(s.images) for s in samples) >= 1
    first_image = next(s.images[0] for s in samples if s.images)
    assert first_image.getpixel((0, 0)) == RED  # the example's first image is red
    assert json.loads((out / "summary.json").read_text())["accepted"] == ex.records
    assert (out / "quarantine" / "quarantine-0000.tar").exists()


def test_format_mapping_details(tmp_path: Path) -> None:
    def records(fmt: str, ex) -> list[dict]:
        out = tmp_path / "out" / fmt
        ingest(fmt, ex.source, out, ex.images, validate=False)
        return [s.record for s in read_samples(sorted((out / "shards").glob("*.tar")))]

    vqa = records("vqav2", EXAMPLES["vqav2"](tmp_path / "vqa"))
    assert vqa[0]["answers"] == ["red"] and vqa[1]["answers"] == ["yes", "no"]
    assert vqa[0]["messages"][0]["content"][-1]["text"] == "What colour is it?"
    llava = records("llava", EXAMPLES["llava"](tmp_path / "llava"))
    assert [m["role"] for m in llava[0]["messages"]] == ["user", "assistant"] * 2
    assert llava[0]["messages"][0]["content"][0] == {"type": "image"}
    assert llava[1]["messages"][0]["content"] == [{"type": "text", "text": "Say hi."}]
    doc = records("obelics", obelics_jsonl(tmp_path / "ob"))[0]
    assert [p["type"] for p in doc["messages"][0]["content"]] == ["text", "image", "image", "text"]
    cauldron = records("cauldron", EXAMPLES["cauldron"](tmp_path / "c"))
    assert [p["type"] for p in cauldron[1]["messages"][0]["content"]] == ["image", "image", "text"]
    assert cauldron[0]["subset"] == "synthetic" and len(cauldron[0]["messages"]) == 4
    pref = records("preference", EXAMPLES["preference"](tmp_path / "p"))
    assert (pref[0]["chosen"], pref[0]["rejected"]) == ("A red square.", "A blue circle.")
    assert image_placeholders(pref[1]["messages"]) == 0


def test_shards_roll_over_at_shard_size(tmp_path: Path) -> None:
    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    summary = ingest("coco-captions", ex.source, tmp_path / "out", ex.images, shard_size=2,
                     validate=False)
    assert [Path(p).name for p in summary.shards] == ["coco-captions-0000.tar",
                                                      "coco-captions-0001.tar"]
    assert len(list(read_samples(summary.shards))) == 3


def test_known_tasks_come_from_both_registries() -> None:
    tasks = set(known_tasks())
    assert set(ingest_tasks()) <= tasks
    assert {"caption", "vqa", "ocr", "text", "preference", "interleaved", "instruct"} <= tasks


def test_cli_ingest_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    ex = EXAMPLES["preference"](tmp_path / "in")
    rc = main(["ingest", "preference", "--source", str(ex.source), "--images", str(ex.images),
               "--out", str(tmp_path / "out"), "--no-mlflow"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (2, 2, 0)
    assert summary["rules"] == {}
