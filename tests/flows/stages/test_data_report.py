"""The data report of a preparation run: counts per task and split, the quarantine table and
an image grid per source; the flow logs it to MLflow and as a Prefect markdown artifact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from components.data.corpus import generate_corpus
from components.data.params import DataParams
from components.data.report import GRID_CELL, build_report, render_markdown, sample_grid

PARAMS = DataParams(shard_size=8, splits={"train": {"scenes_vqa": 5, "ocr": 3, "text": 2},
                                          "test": {"scenes_vqa": 4}})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("report") / "data"
    generate_corpus(PARAMS, data / "shards", workers=1)
    failure = {"expectation": "expect_column_values_to_be_unique", "columns": ["key"],
               "unexpected_count": 2, "examples": ["k1"]}
    (data / "validation.json").write_text(json.dumps({
        "train": {"success": False, "n_rows": 10, "failures": [failure]},
        "test": {"success": True, "n_rows": 4, "failures": []}}))
    ledger = data / "ingest" / "coco-captions" / "quarantine.jsonl"
    ledger.parent.mkdir(parents=True)
    rows = [{"key": f"q{i}", "rule": rule} for i, rule in
            enumerate(["image_decode", "image_decode", "unsafe_path"])]
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_counts_per_task_source_and_split(data_dir):
    report = build_report(data_dir)
    assert report.tasks == {"train": {"vqa": 5, "ocr": 3, "text": 2}, "test": {"vqa": 4}}
    assert report.sources["train"] == {"scenes_vqa": 5, "ocr": 3, "text": 2}
    assert report.total == 14


def test_quarantine_table_reads_ledgers_and_failed_expectations(data_dir):
    report = build_report(data_dir)
    assert ("ingest/coco-captions", "image_decode", 2) in report.quarantine
    assert ("ingest/coco-captions", "unsafe_path", 1) in report.quarantine
    assert ("validation/train", "expect_column_values_to_be_unique(key)", 2) in report.quarantine


def test_markdown_has_the_tables(data_dir):
    md = render_markdown(build_report(data_dir), "abc123")
    assert md.startswith("# Data report, version `abc123`")
    assert "| vqa | 4 | 5 | 9 |" in md  # split columns in manifest order: test, train
    assert "| **total** | 4 | 10 | 14 |" in md
    assert "| ingest/coco-captions | image_decode | 2 |" in md
    assert "train: 10 rows FAILED" in md and "samples.png" in md


def test_a_clean_run_says_nothing_was_quarantined(tmp_path, data_dir):
    (tmp_path / "shards").symlink_to(data_dir / "shards")
    md = render_markdown(build_report(tmp_path), "v")
    assert "No record quarantined" in md and "no validation report" in md


def test_the_grid_has_a_row_per_source(data_dir):
    grid = sample_grid(data_dir / "shards", per_source=4)
    assert grid.height == 3 * (GRID_CELL + 2)  # ocr, scenes_vqa, text
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    row = Image.open(buf).convert("RGB").crop((120, 0, 120 + GRID_CELL, GRID_CELL))
    assert len(row.getcolors(maxcolors=1 << 16)) > 10  # an OCR sample, not an empty cell


@pytest.mark.slow
def test_the_data_flow_logs_the_report(tmp_path):
    """`vlmforge data` on a tiny recipe: MLflow artifacts and the Prefect markdown artifact."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    import registry
    from components.recipe import load_recipe
    from flows.stages.data import data_flow
    from registry.tracking import client as mlflow_client
    from registry.tracking import experiment

    registry.configure(tmp_path / "home")
    root = Path(__file__).resolve().parents[3]
    recipe = load_recipe(root / "configs/micro.yaml").model_copy(
        update={"name": "report-test", "data": PARAMS.model_copy(update={"vocab_size": 400})})
    data = data_flow(recipe)
    assert (Path(data.workspace) / "report" / "samples.png").exists()
    runs = mlflow_client().search_runs([experiment()], "tags.stage = 'data'")
    paths = {a.path for a in mlflow_client().list_artifacts(runs[0].info.run_id, "data_report")}
    assert paths == {"data_report/data_report.md", "data_report/samples.png"}
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["report-test-data-report"])))
    assert found and found[0].type == "markdown" and data.version in found[0].data
