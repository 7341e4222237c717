"""The data report of a preparation run: counts per task and split, the quarantine table, an
image grid per source, plots, duplicates and contamination; the flow logs it to MLflow and as
a Prefect markdown artifact. The contamination stage in a DVC workspace: planted copies of an
official suite's images are found 20 of 20; quarantine mode takes them out of training and
changes the data version, report mode changes nothing training reads."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.data.corpus import generate_corpus
from components.data.params import DataParams
from components.data.report import GRID_CELL, PLOTS, build_report, render_markdown, sample_grid

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


# ---- the contamination stage --------------------------------------------------------------

PLANTED = [(1, None)] * 4 + [(2, 95), (2, 75), (1.5, 90), (1.5, 75), (3, 85), (1.25, 80),
                             (1, 95), (1, 75), (0.75, 90), (0.75, 75), (0.6, 85), (0.5, 95),
                             (0.5, 75), (4, 75), (1, 85), (0.8, 80)]  # (scale, JPEG quality)


def plant_copies(train: Path, suite: Path, suite_images: str) -> dict[int, str]:
    """Add 20 copies of the suite's images (exact, resized, re-encoded) to a COCO-captions
    training folder, one caption each; returns {training image id: suite image file}."""
    from components.data.duplicates import resized_copy

    ann_path = train / "annotations" / "captions_train2014.json"
    ann = json.loads(ann_path.read_text())
    originals = sorted((suite / suite_images).glob("*.jpg"))[::2]
    planted = {}
    for n, ((scale, quality), original) in enumerate(zip(PLANTED, originals, strict=True)):
        image_id = 1000 + n
        name = f"planted_{n:02d}.png"
        with Image.open(original) as image:
            copy = resized_copy(image, scale, quality)
        copy.save(train / "train2014" / name)
        ann["images"].append({"id": image_id, "file_name": name, "width": copy.width,
                              "height": copy.height})
        ann["annotations"].append({"id": 10_000 + n, "image_id": image_id,
                                   "caption": f"a copied picture number {n}."})
        planted[image_id] = original.name
    ann_path.write_text(json.dumps(ann))
    return planted


def contaminated_recipe(root: Path, name: str, mode: str):
    from components.recipe import load_recipe

    base = load_recipe(Path(__file__).resolve().parents[3] / "configs/micro.yaml")
    data = DataParams(seed=3, shard_size=16, vocab_size=400, contamination=mode,
                      splits={"train": {"scenes_vqa": 6}, "test": {"scenes_vqa": 4}},
                      datasets={"shapes": {"format": "coco-captions",
                                           "source": str(root / "coco/annotations/captions_train2014.json"),
                                           "images": str(root / "coco/train2014")}})
    suites = {"captions_val": {"kind": "caption", "images": str(root / "coco-val/val2014"),
                               "annotations": str(root / "coco-val/annotations/captions_val2014.json")}}
    return base.model_copy(update={"name": name, "data": data,
                                   "evaluate": base.evaluate.model_copy(update={"suites": suites})})


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    """A workspace with a COCO-captions dataset holding 20 planted copies of the caption
    suite's images: the stages run in report mode, then in quarantine mode."""
    from components.data.export import export_coco_captions
    from flows.stages.data import _dvc, prepare_workspace, read_version

    root = tmp_path_factory.mktemp("contaminated")
    export_coco_captions("scenes_caption", 30, root / "coco", seed=1)
    export_coco_captions("scenes_caption", 40, root / "coco-val", seed=2, subset="val2014")
    planted = plant_copies(root / "coco", root / "coco-val", "val2014")
    recipe = contaminated_recipe(root, f"contaminated-{root.name}", "report")
    ws = prepare_workspace(recipe)
    _dvc(ws, "repro", "shards", "validate", "tokenizer")
    before = read_version(ws)  # the data without the contamination stage
    _dvc(ws, "repro")
    report = read_version(ws)
    report_json = json.loads((ws / "data" / "contamination.json").read_text())
    prepare_workspace(recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"contamination": "quarantine"})}))
    reran = _dvc(ws, "repro").stdout
    quarantine = read_version(ws)
    yield {"ws": ws, "planted": planted, "before": before, "report": report, "reran": reran,
           "report_json": report_json, "quarantine": quarantine,
           "quarantine_json": json.loads((ws / "data" / "contamination.json").read_text())}
    shutil.rmtree(ws, ignore_errors=True)


def _planted_keys(ws: Path, planted: dict[int, str]) -> dict[str, str]:
    """Training key -> suite image of each planted copy (the records keep their image_id)."""
    from components.data.shards import read_records, shard_paths

    return {key: planted[rec["image_id"]]
            for key, rec in read_records(shard_paths(ws / "data/shards", "train", ["shapes"]))
            if rec.get("image_id") in planted}


def test_planted_suite_copies_are_found_twenty_of_twenty(contaminated):
    c = contaminated["quarantine_json"]
    expected = _planted_keys(contaminated["ws"], contaminated["planted"])
    assert len(expected) == 20
    suite_rows = {r["key"]: r["suite_image"] for r in c["overlap"] if r["suite"] == "captions_val"}
    assert suite_rows == expected  # each copy, matched with the suite image it copies
    assert c["suites"]["captions_val"]["train_samples"] == 20
    assert c["suites"]["captions_val"]["exact"] == 4
    assert set(c["quarantined"]) >= set(expected) and c["train_overlap"] == len(c["quarantined"])


def test_report_mode_leaves_the_data_version_and_quarantine_mode_changes_it(contaminated):
    before, report, quarantine = (contaminated[k] for k in ("before", "report", "quarantine"))
    assert report.version == before.version  # the stage's output is not what training reads
    assert "data/contamination.json" in report.hashes
    assert quarantine.version != report.version
    assert {k: v for k, v in quarantine.hashes.items() if k != "data/contamination.json"} == \
        {k: v for k, v in report.hashes.items() if k != "data/contamination.json"}
    assert "Running stage 'contamination'" in contaminated["reran"]  # only this stage reran
    assert "Running stage 'shards'" not in contaminated["reran"]
    assert contaminated["report_json"]["quarantined"] == []
    assert contaminated["report_json"]["overlap"] == contaminated["quarantine_json"]["overlap"]
    assert quarantine.contamination["mode"] == "quarantine"
    assert quarantine.contamination["train_overlap"] == contaminated["quarantine_json"]["train_overlap"]


def test_training_streams_skip_the_quarantine_only_in_quarantine_mode(contaminated, tmp_path):
    import itertools

    from components.training.data_stream import sample_stream

    ws, c = contaminated["ws"], contaminated["quarantine_json"]
    seen = {s.key for s in itertools.islice(sample_stream(ws / "data/shards", ["shapes"], 0), 300)}
    assert seen and not seen & set(c["quarantined"])
    mixed = sample_stream(ws / "data/shards", [], 0, mixture={"shapes": 1.0, "scenes_vqa": 1.0})
    assert not {s.key for s in itertools.islice(mixed, 300)} & set(c["quarantined"])
    (tmp_path / "shards").symlink_to(ws / "data/shards")  # the same shards, no quarantine beside
    seen = {s.key for s in itertools.islice(sample_stream(tmp_path / "shards", ["shapes"], 0), 300)}
    assert set(c["quarantined"]) <= seen


def test_the_lineage_tags_carry_the_overlap(contaminated):
    from flows.lineage import dataset_tags

    tags = dataset_tags(contaminated["quarantine"])
    assert tags["contamination.train_overlap"] == str(contaminated["quarantine_json"]["train_overlap"])
    assert tags["contamination.mode"] == "quarantine" and "dataset.shapes" in tags


def test_the_workspace_lists_the_suites_and_their_image_folders(contaminated):
    import yaml

    ws = contaminated["ws"]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["suites"]["synthetic"] == {"split": "test"}
    folder = params["suites"]["captions_val"]["images"]
    stage = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]["contamination"]
    assert folder in stage["deps"] and "suites" in stage["params"]


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
    run_id = runs[0].info.run_id
    paths = {a.path for a in mlflow_client().list_artifacts(run_id, "data_report")}
    assert paths == {"data_report/data_report.md", "data_report/samples.png",
                     *(f"data_report/{name}" for name in PLOTS.values())}
    assert runs[0].data.tags["contamination.train_overlap"] == str(data.contamination["train_overlap"])
    assert "contamination_train_overlap" in runs[0].data.metrics
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["report-test-data-report"])))
    assert found and found[0].type == "markdown" and data.version in found[0].data
    assert run_id[:12] in found[0].data and "data_report/data_report.md" in found[0].data


@pytest.mark.slow
def test_registered_versions_carry_the_contamination_tags(tmp_path):
    """The pipeline on data with planted suite copies, in quarantine mode: every registered
    version (backbones and stages) carries the number of overlapping training samples."""
    import registry
    from components.data.export import export_coco_captions
    from flows.pipeline import pipeline

    export_coco_captions("scenes_caption", 30, tmp_path / "coco", seed=1)
    export_coco_captions("scenes_caption", 40, tmp_path / "coco-val", seed=2, subset="val2014")
    plant_copies(tmp_path / "coco", tmp_path / "coco-val", "val2014")
    recipe = contaminated_recipe(tmp_path, "contaminated-e2e", "quarantine")
    stage = recipe.stages[0].model_copy(update={
        "sources": ["scenes_vqa", "shapes"],
        "train": recipe.stages[0].train.model_copy(update={"steps": 2, "batch_size": 4})})
    recipe = recipe.model_copy(update={"stages": [stage]})
    registry.configure(tmp_path / "home")
    result = pipeline(recipe)
    overlap = result.data.contamination["train_overlap"]
    assert overlap >= 20 and result.data.contamination["mode"] == "quarantine"
    versions = [(recipe.registered_model, s.version) for s in result.stages]
    versions += [(b.name, b.version) for b in result.backbones]
    for name, version in versions:
        tags = registry.version_info(name, version)["tags"]
        assert tags["contamination.train_overlap"] == str(overlap), name
        assert tags["contamination.mode"] == "quarantine"
