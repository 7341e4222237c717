"""Shards, manifests, params and the generate CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from components.data.__main__ import main
from components.data.corpus import generate_sample, shard_plan, write_split, write_splits
from components.data.manifest import COLUMNS, read_manifest
from components.data.params import DataParams, load_data_params
from components.data.shards import read_samples, sample_to_wds, split_shards, wds_to_sample

SMALL = {
    "seed": 7,
    "image_size": 32,
    "shard_size": 4,
    "splits": {
        "train": {"scenes_caption": 5, "scenes_vqa": 6, "ocr": 4, "text": 3, "preference": 5},
        "test": {"scenes_vqa": 4, "text": 2},
    },
}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sample_round_trip_in_memory() -> None:
    for source in ("scenes_vqa", "ocr", "text"):
        sample = generate_sample(source, 0, "train", 3)
        back = wds_to_sample(sample_to_wds(sample))
        assert back.key == sample.key and back.record == sample.record
        assert [
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(back.images, sample.images, strict=True)
        ] == [True] * len(sample.images)


def test_shards_are_byte_identical_to_webdatasets_tar_writer(tmp_path: Path) -> None:
    """write_shard uses the standard library; its tars equal webdataset's TarWriter's, so every
    data version written before stays the same."""
    from webdataset import TarWriter

    from components.data.shards import TAR_MTIME, write_shard

    samples = [generate_sample(s, 0, "train", i) for s in ("scenes_vqa", "text", "ocr") for i in range(3)]
    write_shard(samples, tmp_path / "ours.tar")
    with open(tmp_path / "theirs.tar", "wb") as f, \
            TarWriter(f, encoder=False, mtime=TAR_MTIME, compress=False) as sink:
        for sample in samples:
            sink.write(sample_to_wds(sample))
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "theirs.tar").read_bytes()


def test_write_then_read_gives_identical_samples(tmp_path: Path) -> None:
    params = DataParams.model_validate(SMALL)
    rows = write_split(params, "train", tmp_path, workers=1)
    shards = split_shards(tmp_path, "train")
    assert [p.name for p in shards] == sorted(
        [
            "ocr-0000.tar",
            "preference-0000.tar",
            "preference-0001.tar",
            "scenes_caption-0000.tar",
            "scenes_caption-0001.tar",
            "scenes_vqa-0000.tar",
            "scenes_vqa-0001.tar",
            "text-0000.tar",
        ]
    )
    read = list(read_samples(shards))
    assert len(read) == len(rows) == 23
    by_key = {s.key: s for s in read}
    for source, n in params.counts("train").items():
        for i in range(n):
            want = generate_sample(source, 7, "train", i, image_size=32)
            got = by_key[want.key]
            assert got.record == want.record
            assert len(got.images) == len(want.images)
            for a, b in zip(got.images, want.images, strict=True):
                assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_output_is_deterministic_and_parallel_equals_serial(tmp_path: Path) -> None:
    params = DataParams.model_validate(SMALL)
    write_splits(params, ["train", "test"], tmp_path / "a", workers=1)
    write_splits(params, ["train", "test"], tmp_path / "b", workers=1)
    write_splits(params, ["train", "test"], tmp_path / "c", workers=2)
    a, b, c = (tree_hashes(tmp_path / d) for d in "abc")
    assert a == b == c
    assert "manifests/train.jsonl" in a and "test/scenes_vqa-0000.tar" in a


def test_rewrite_removes_stale_shards(tmp_path: Path) -> None:
    params = DataParams.model_validate(SMALL)
    write_split(params, "train", tmp_path, workers=1)
    smaller = params.model_copy(update={"splits": {"train": {"text": 2}}})
    write_split(smaller, "train", tmp_path, workers=1)
    assert [p.name for p in split_shards(tmp_path, "train")] == ["text-0000.tar"]


def test_manifest_columns_and_values(tmp_path: Path) -> None:
    params = DataParams.model_validate(SMALL)
    write_split(params, "test", tmp_path, workers=1)
    rows = read_manifest(tmp_path / "manifests" / "test.jsonl")
    assert len(rows) == 6
    for row in rows:
        assert tuple(row) == COLUMNS
        assert (tmp_path / "test" / row["shard"]).is_file()
        assert row["split"] == "test" and row["n_images"] == row["n_image_placeholders"]
        assert row["answer"] and row["text_chars"] > len(row["answer"])
    vqa = [r for r in rows if r["source"] == "scenes_vqa"]
    text = [r for r in rows if r["source"] == "text"]
    assert {(r["task"], r["n_images"], r["n_turns"], r["n_assistant_turns"]) for r in vqa} == {
        ("vqa", 1, 2, 1)
    }
    assert {(r["min_width"], r["max_height"]) for r in vqa} == {(32, 32)}
    assert {(r["task"], r["n_images"], r["min_width"], r["max_height"]) for r in text} == {
        ("text", 0, 0, 0)
    }
    assert len({r["key"] for r in rows}) == len(rows)


def test_shard_plan_ranges() -> None:
    params = DataParams.model_validate(SMALL)
    jobs = shard_plan(params, "train")
    assert [(j.source, j.shard, j.start, j.stop) for j in jobs if j.source == "scenes_vqa"] == [
        ("scenes_vqa", 0, 0, 4),
        ("scenes_vqa", 1, 4, 6),
    ]


def test_params_validation(tmp_path: Path) -> None:
    assert DataParams().counts("train")["scenes_vqa"] == 4000
    with pytest.raises(ValidationError, match="unknown source 'images' in split 'train'"):
        DataParams.model_validate({"splits": {"train": {"images": 3}}})
    with pytest.raises(ValidationError, match="unknown split 'dev'"):
        DataParams.model_validate({"splits": {"dev": {"text": 3}}})
    with pytest.raises(ValidationError, match="negative count"):
        DataParams.model_validate({"splits": {"train": {"text": -1}}})
    with pytest.raises(ValidationError, match="shard_sise"):
        DataParams.model_validate({"shard_sise": 3})
    path = tmp_path / "params.yaml"
    path.write_text("other: 1\ndata:\n  seed: 3\n  splits:\n    val: {text: 2}\n")
    params = load_data_params(path)
    assert params.seed == 3 and params.counts("val") == {
        "scenes_caption": 0,
        "scenes_vqa": 0,
        "ocr": 0,
        "text": 2,
        "preference": 0,
    }
    path.write_text("model: {}\n")
    with pytest.raises(ValueError, match="no top-level 'data:' section"):
        load_data_params(path)


def test_generate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {**SMALL, "splits": {"val": {"text": 3, "ocr": 2}}}}))
    main(["generate", "--params", str(params), "--out", str(tmp_path / "shards"), "--workers", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"val": {"ocr": 2, "text": 3}} and summary["samples"] == 5
    assert summary["records_per_s"] > 0
    assert len(read_manifest(tmp_path / "shards" / "manifests" / "val.jsonl")) == 5
