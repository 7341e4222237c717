"""`vlmforge ingest` end to end with MLflow: counts per rule logged, FAILED over the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.ingest.examples import EXAMPLES


@pytest.mark.slow
def test_cli_logs_counts_per_rule_and_fails_over_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    (ex.images / "COCO_val2014_000000000002.jpg").write_bytes(b"corrupt")
    args = ["ingest", "coco-captions", "--source", str(ex.source), "--images", str(ex.images)]

    assert main([*args, "--out", str(tmp_path / "a")]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["read"], summary["accepted"], summary["quarantined"]) == (3, 2, 1)
    assert summary["rules"] == {"image_decode": 1}
    assert "quarantined 1 of 3 records (33.3%), above the threshold 5.0%" in captured.err
    failed_id = captured.err.split("mlflow run ")[1].split()[0]

    assert main([*args, "--out", str(tmp_path / "b"), "--max-quarantine-rate", "0.5"]) == 0
    ok_id = capsys.readouterr().err.split("mlflow run ")[1].split()[0]

    import mlflow

    client = mlflow.MlflowClient()
    failed, ok = client.get_run(failed_id), client.get_run(ok_id)
    assert (failed.info.status, ok.info.status) == ("FAILED", "FINISHED")
    for run in (failed, ok):
        metrics = run.data.metrics
        assert (metrics["read"], metrics["accepted"], metrics["quarantined"]) == (3, 2, 1)
        assert metrics["quarantined_image_decode"] == 1
        assert run.data.tags["stage"] == "ingest"
    artifacts = {a.path for a in client.list_artifacts(ok_id)}
    assert {"summary.json", "validation.json", "quarantine.jsonl"} <= artifacts


def test_the_recipe_sets_the_threshold_unless_the_flag_does(tmp_path: Path, capsys) -> None:
    import yaml

    from flows.cli import main

    ex = EXAMPLES["coco-captions"](tmp_path / "in")
    (ex.images / "COCO_val2014_000000000002.jpg").write_bytes(b"corrupt")  # 1 of 3 quarantined
    recipe = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs/micro.yaml").read_text())
    recipe["data"]["max_quarantine_rate"] = 0.5
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = ["ingest", "coco-captions", "--source", str(ex.source), "--images", str(ex.images),
            "--no-mlflow"]

    assert main([*args, "--out", str(tmp_path / "a"), "--recipe", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["max_quarantine_rate"] == 0.5
    assert main([*args, "--out", str(tmp_path / "b"), "--recipe", str(path),
                 "--max-quarantine-rate", "0.1"]) == 1
    assert "above the threshold 10.0%" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c")]) == 1  # no recipe: the default 5%
