"""Shard generation on a 2-worker Dask LocalCluster (127.0.0.1) writes the same bytes
as the serial run, both directly (components.data.parallel) and fanned out as Prefect
tasks on prefect-dask's DaskTaskRunner (flows.stages.data_dask)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from components.data.corpus import write_splits  # noqa: E402
from components.data.parallel import local_cluster, write_splits_on_dask  # noqa: E402
from components.data.params import DataParams  # noqa: E402

SMALL = {"seed": 7, "image_size": 32, "shard_size": 3,
         "splits": {"train": {"scenes_caption": 4, "scenes_vqa": 5, "ocr": 3, "text": 2,
                              "preference": 2},
                    "test": {"scenes_vqa": 4, "ocr": 2}}}


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("serial")
    write_splits(DataParams.model_validate(SMALL), ["train", "test"], out, workers=1)
    return tree_hashes(out)


def test_dask_shards_are_byte_identical_to_serial(serial, tmp_path):
    params = DataParams.model_validate(SMALL)
    with local_cluster(n_workers=2) as client:
        assert len(client.nthreads()) == 2
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in client.nthreads())
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        write_splits_on_dask(params, ["train", "test"], tmp_path, client)
    got = tree_hashes(tmp_path)
    assert got == serial
    assert "train/scenes_vqa-0001.tar" in got and "manifests/test.jsonl" in got


@pytest.mark.slow  # a Dask cluster under Prefect: ~35 s (make test-slow); the plain Dask test stays
def test_prefect_dask_fan_out_is_byte_identical_to_serial(serial, tmp_path):
    pytest.importorskip("prefect_dask")
    from flows.stages.data_dask import generate_corpus_dask_flow

    summary = generate_corpus_dask_flow(DataParams.model_validate(SMALL), str(tmp_path), n_workers=2)
    assert summary["shards"] == 10 and summary["samples"] == 22
    assert tree_hashes(tmp_path) == serial
