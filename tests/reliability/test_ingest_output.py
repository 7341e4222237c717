"""An ingest's output is written beside it and renamed into place at the end: an ingest that
fails its gate, crashes or is killed leaves the previous good output whole and readable; a
record whose shard entry cannot be written leaves the shard consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from components.data.ingest.examples import EXAMPLES, png
from components.data.ingest.output import replace_dir, restore, sibling
from components.data.ingest.run import ShardSink, ingest
from components.data.quarantine import QuarantineRateError, read_quarantine, tar_members
from components.data.sample import Sample, assistant_turn, user_turn

ROOT = Path(__file__).resolve().parents[2]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def shard_keys(out: Path) -> list[str]:
    keys = []
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p, "r:") as tar:
            keys += [m.name[:-5] for m in tar_members(tar, p.stat().st_size)
                     if m.name.endswith(".json")]
    return keys


def good_ingest(tmp_path: Path, out: Path) -> dict[str, bytes]:
    ex = EXAMPLES["coco-captions"](tmp_path / "good")
    summary = ingest("coco-captions", ex.source, out, ex.images, validate=False)
    assert summary.accepted == 3 and summary.out == str(out)
    return snapshot(out)


def test_a_failing_ingest_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = good_ingest(tmp_path, out)
    ex = EXAMPLES["coco-captions"](tmp_path / "bad")
    (ex.images / "COCO_val2014_000000000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(QuarantineRateError) as exc:
        ingest("coco-captions", ex.source, out, ex.images)
    assert snapshot(out) == before  # byte for byte
    assert json.loads((out / "summary.json").read_text())["accepted"] == 3
    assert shard_keys(out) == ["coco-captions-10", "coco-captions-11", "coco-captions-12"]
    # the rejected run is kept beside it, whole, and the error says where
    rejected = tmp_path / "out.rejected"
    assert exc.value.summary.out == str(rejected) and str(rejected) in str(exc.value)
    assert [e["key"] for e in read_quarantine(rejected / "quarantine" / "quarantine-0000.tar")] \
        == ["coco-captions-12"]
    assert not sibling(out, "partial").exists() and not sibling(out, "old").exists()
    # a later passing run replaces both
    good_ingest(tmp_path / "again", out)
    assert not rejected.exists()


def test_an_out_holding_other_files_is_refused_untouched(tmp_path: Path) -> None:
    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    with pytest.raises(ValueError, match="holds files an ingest does not write"):
        ingest("coco-captions", ex.source, ex.source.parent, ex.images)  # --out = the input
    assert ex.source.exists() and (ex.images / "COCO_val2014_000000000001.jpg").exists()


KILLED_INGEST = """
import sys
from components.data.ingest.run import ingest
ingest("cauldron", sys.argv[1], sys.argv[2], validate=False)
"""


def test_an_ingest_killed_mid_write_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = good_ingest(tmp_path, out)
    (tmp_path / "a.png").write_bytes(png(0))
    row = {"images": ["a.png"], "texts": [{"user": "Colour?", "assistant": "Red."}]}
    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps({**row, "id": i}) + "\n" for i in range(20000)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(source), str(out)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE)
    partial = sibling(out, "partial") / "shards"
    deadline = time.monotonic() + 120
    while not any(partial.glob("*.tar.tmp")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the ingest never started writing"
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(out) == before
    # the next run starts clean from the leftover staging folder
    good_ingest(tmp_path / "next", out)
    assert not sibling(out, "partial").exists()


def test_a_run_lost_between_the_two_renames_is_restored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = good_ingest(tmp_path, out)
    out.rename(sibling(out, "old"))  # killed after moving the old output aside
    restore(out)
    assert snapshot(out) == good
    new = tmp_path / ".new"
    new.mkdir()
    (new / "summary.json").write_text("{}")
    replace_dir(new, out)
    assert snapshot(out) == {"summary.json": b"{}"} and not sibling(out, "old").exists()


def test_a_shard_entry_that_cannot_be_written_leaves_the_shard_consistent(tmp_path: Path) -> None:
    def sample(key: str) -> Sample:
        return Sample(key, [], {"task": "text", "source": "t", "answers": ["4"],
                                "messages": [user_turn("2+2?"), assistant_turn("4")]})

    sink = ShardSink(tmp_path, "t", 10)
    sink.write(sample("a"))
    with pytest.raises(ValueError, match="too long"):
        sink.write(sample("k" * 300))  # a USTAR name holds 100 bytes
    sink.write(sample("b"))
    [path] = sink.close()
    with tarfile.open(path, "r:") as tar:
        names = [m.name for m in tar_members(tar, path.stat().st_size)]
    assert names == ["a.json", "b.json"]


def test_a_dataset_stage_that_fails_leaves_its_previous_output(tmp_path: Path) -> None:
    from components.data.datasets import DatasetSpec, ingest_dataset

    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    spec = DatasetSpec(format="coco-captions", source=str(ex.source), images=str(ex.images))
    out = tmp_path / "datasets" / "coco"
    first = ingest_dataset("coco", spec, out)
    assert first["accepted"] == 3
    before = snapshot(out)
    (ex.images / "COCO_val2014_000000000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(QuarantineRateError):
        ingest_dataset("coco", spec, out)
    assert snapshot(out) == before
    relaxed = spec.model_copy(update={"max_quarantine_rate": 0.5})
    assert ingest_dataset("coco", relaxed, out)["accepted"] == 2
    assert json.loads((out / "summary.json").read_text())["quarantined"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["coco"]  # no staging left behind
