"""Every file of a source folder gets a row in ``quarantine/files.jsonl`` -- read, stopped or
skipped with the reason -- and a file that looks like input but is not read counts as one
quarantined record (``skipped_file``). A reader that raises costs its file, not the rest of
the folder."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest

from components.data.ingest.examples import EXAMPLES, webdataset_captions_members
from components.data.ingest.run import IngestSummary, ingest
from components.data.quarantine import write_tar_sample


def pref_rows(tag: str, n: int = 2) -> str:
    return "".join(json.dumps({"id": f"{tag}{i}", "prompt": f"Is {i} > 0?", "chosen": "Yes.",
                               "rejected": "No."}) + "\n" for i in range(n))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(fmt: str, source: Path, out: Path) -> tuple[IngestSummary, dict[str, dict], list[dict]]:
    """Ingest (no GE, any rate): the summary, files.jsonl by file name, the quarantine rows;
    the balance counted from the written files."""
    summary = ingest(fmt, source, out, validate=False, max_quarantine_rate=1.0)
    files = {Path(f["path"]).name: f for f in lines(out / "quarantine" / "files.jsonl")}
    rows = lines(out / "quarantine" / "quarantine.jsonl")
    samples = 0
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            samples += sum(m.name.endswith(".json") for m in tar.getmembers())
    assert samples + len(rows) == summary.read == sum(f["read"] for f in files.values())
    assert sum(f["quarantined"] for f in files.values()) == len(rows) == summary.quarantined
    assert sum(f["accepted"] for f in files.values()) == samples == summary.accepted
    return summary, files, rows


def test_every_file_of_a_source_folder_has_a_ledger_row(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text(pref_rows("a"))
    (src / "b.JSONL").write_text(pref_rows("b"))
    (src / "c.jsonl.gz").write_bytes(gzip.compress(pref_rows("c").encode()))
    (src / "d.jsonl").write_text(pref_rows("d"))
    (src / "notes.txt").write_text("how this data was made")
    (src / "nested").mkdir()
    (src / "nested" / "e.jsonl").write_text(pref_rows("e"))
    os.symlink(src / "missing.jsonl", src / "f.jsonl")  # a broken link
    summary, files, rows = run("preference", src, tmp_path / "out")

    assert set(files) == {"a.jsonl", "b.JSONL", "c.jsonl.gz", "d.jsonl", "notes.txt", "nested",
                          "f.jsonl"}
    assert {n: f["status"] for n, f in files.items()} == {
        "a.jsonl": "read", "d.jsonl": "read", "b.JSONL": "skipped", "c.jsonl.gz": "skipped",
        "notes.txt": "skipped", "nested": "skipped", "f.jsonl": "skipped"}
    assert "in another case" in files["b.JSONL"]["reason"]
    assert "compressed (.gz)" in files["c.jsonl.gz"]["reason"]
    assert "unknown suffix '.txt'" in files["notes.txt"]["reason"]
    assert "sub-folders are not read" in files["nested"]["reason"]
    assert "not a regular file" in files["f.jsonl"]["reason"]
    # files that look like input are one quarantined record each; the others only listed
    assert sorted((r["key"], r["rule"]) for r in rows) == [
        ("b.JSONL", "skipped_file"), ("c.jsonl.gz", "skipped_file"), ("f.jsonl", "skipped_file")]
    assert (summary.read, summary.accepted, summary.quarantined) == (7, 4, 3)
    assert summary.files["read"] == 2 and summary.files["skipped"] == 5
    listed = {Path(f["path"]).name: f["quarantined"] for f in summary.files["skipped_files"]}
    assert listed == {"b.JSONL": True, "c.jsonl.gz": True, "f.jsonl": True, "notes.txt": False,
                      "nested": False}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["files"] == summary.files


def test_tar_folders_count_compressed_shards_and_list_sidecars(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(src / "00000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in webdataset_captions_members():
            write_tar_sample(tar, sample)
    (src / "00001.tar.gz").write_bytes(gzip.compress((src / "00000.tar").read_bytes()))
    (src / "00002.tgz").write_bytes(b"\x1f\x8b")
    (src / "00000.parquet").write_bytes(b"PAR1")  # img2dataset's sidecars
    (src / "00000_stats.json").write_text("{}")
    summary, files, rows = run("webdataset-captions", src, tmp_path / "out")
    assert summary.accepted == 3
    assert sorted(r["key"] for r in rows) == ["00001.tar.gz", "00002.tgz"]
    assert {n for n, f in files.items() if f["status"] == "skipped" and not f["quarantined"]} \
        == {"00000.parquet", "00000_stats.json"}


def test_a_compressed_source_file_is_one_skipped_record_not_garbage_lines(tmp_path: Path) -> None:
    source = tmp_path / "p.jsonl.gz"
    source.write_bytes(gzip.compress(pref_rows("p", 50).encode()))
    summary, files, rows = run("preference", source, tmp_path / "out")
    assert [(r["key"], r["rule"]) for r in rows] == [("p.jsonl.gz", "skipped_file")]
    assert "decompress it" in files["p.jsonl.gz"]["reason"]


def test_a_vqa_folder_lists_its_other_files(tmp_path: Path) -> None:
    ex = EXAMPLES["vqav2"](tmp_path / "in")
    (ex.source / "README.md").write_text("VQA v2")
    (ex.source / "v2_mscoco_test_annotations.json.gz").write_bytes(b"\x1f\x8b")
    summary = ingest("vqav2", ex.source, tmp_path / "out", ex.images, validate=False,
                     max_quarantine_rate=1.0)
    files = {Path(f["path"]).name: f
             for f in lines(tmp_path / "out" / "quarantine" / "files.jsonl")}
    assert files["src"]["status"] == "read" and files["src"]["accepted"] == 2
    assert files["README.md"]["status"] == "skipped"
    assert files["v2_mscoco_test_annotations.json.gz"]["quarantined"] == 1
    assert (summary.read, summary.accepted, summary.rules) == (3, 2, {"skipped_file": 1})


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_reader_that_raises_costs_its_file_and_the_next_file_is_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text(pref_rows("a"))
    os.symlink("/proc/self/mem", src / "b.jsonl")  # a regular file whose read fails (EIO)
    (src / "c.jsonl").write_text(pref_rows("c", 3))
    summary, files, rows = run("preference", src, tmp_path / "out")
    assert (summary.read, summary.accepted, summary.quarantined) == (6, 5, 1)
    [row] = rows
    assert (row["key"], row["rule"]) == ("b.jsonl", "unreadable_file")
    assert "OSError" in row["detail"] and "the reader raised after 0 record(s)" in row["detail"]
    assert files["b.jsonl"]["status"] == "stopped" and files["c.jsonl"]["accepted"] == 3
    assert summary.files["stopped_files"] == [{"path": str(src / "b.jsonl"),
                                                "reason": files["b.jsonl"]["reason"]}]
