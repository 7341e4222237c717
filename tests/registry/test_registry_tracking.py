"""registry.tracking against a real SQLite MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import registry

REPO = Path(__file__).resolve().parents[2]


def _subprocess(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_does_not_load_mlflow() -> None:
    proc = _subprocess(
        """
        import sys, registry, registry.tracking, registry.models, registry.promotion
        registry.GateConfig, registry.configure
        assert "mlflow" not in sys.modules, "mlflow imported eagerly"
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_configure_is_idempotent_and_keeps_artifacts_in_home(home: Path) -> None:
    import mlflow

    cfg = registry.configure(home)
    assert registry.configure(home) == cfg
    assert cfg.tracking_uri == cfg.registry_uri == f"sqlite:///{home}/mlflow.db"
    assert cfg.artifact_root == home / "mlartifacts"
    assert mlflow.get_tracking_uri() == cfg.tracking_uri
    assert mlflow.get_registry_uri() == cfg.tracking_uri
    # even the Default experiment (created with the schema) stores artifacts under home
    default_location = mlflow.MlflowClient().get_experiment("0").artifact_location
    assert default_location.startswith(str(cfg.artifact_root))


def test_configure_honours_user_tracking_uri(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = registry.configure(tmp_path / "home")
    assert cfg.tracking_uri == cfg.registry_uri == uri
    registry.configure(home)  # a user-set URI still wins on reconfigure
    assert registry.current_config().tracking_uri == uri


def test_experiment_get_or_create(home: Path) -> None:
    import mlflow

    exp_id = registry.experiment("exp-a")
    assert registry.experiment("exp-a") == exp_id
    location = mlflow.MlflowClient().get_experiment(exp_id).artifact_location
    assert location == str(home / "mlartifacts" / "exp-a")


def test_child_runs_with_explicit_parent_across_threads(home: Path) -> None:
    import mlflow

    with registry.start_run("pipeline", experiment_name="nesting", tags={"k": 1}) as parent:

        def stage(name: str) -> str:
            assert mlflow.active_run() is None  # parent is not active in this thread
            with registry.start_run(name, parent_run_id=parent) as child:
                registry.log_metrics({"loss": 1.0})
                return child

        with ThreadPoolExecutor(2) as pool:
            children = list(pool.map(stage, ["train", "eval"]))
        # in this thread `parent` is active: nesting under another run must still work
        with registry.start_run("export", parent_run_id=children[0]) as grandchild:
            assert mlflow.active_run().info.run_id == grandchild
        assert mlflow.active_run().info.run_id == parent
    assert mlflow.active_run() is None

    p = registry.get_run(parent)
    assert p["status"] == "FINISHED" and p["tags"]["k"] == "1" and p["parent_run_id"] is None
    for child in children:
        c = registry.get_run(child)
        assert c["parent_run_id"] == parent
        assert c["experiment_id"] == p["experiment_id"]
        assert c["status"] == "FINISHED" and c["metrics"] == {"loss": 1.0}
    assert registry.get_run(grandchild)["parent_run_id"] == children[0]
    assert {registry.get_run(c)["name"] for c in children} == {"train", "eval"}


def test_child_run_in_another_process(home: Path) -> None:
    with registry.start_run("pipeline") as parent:
        proc = _subprocess(
            f"""
            import registry
            registry.configure({str(home)!r})
            with registry.start_run("stage", parent_run_id={parent!r}) as rid:
                registry.log_params({{"where": "subprocess"}})
            print(rid)
            """
        )
        assert proc.returncode == 0, proc.stderr
    child = registry.get_run(proc.stdout.strip().splitlines()[-1])
    assert child["parent_run_id"] == parent
    assert child["params"] == {"where": "subprocess"}
    assert child["status"] == "FINISHED"


def test_failed_block_ends_run_failed(home: Path) -> None:
    with pytest.raises(ZeroDivisionError), registry.start_run("boom") as rid:
        1 / 0  # noqa: B018
    assert registry.get_run(rid)["status"] == "FAILED"


def test_loggers_need_a_run(home: Path) -> None:
    with pytest.raises(RuntimeError, match="no active run"):
        registry.log_metrics({"x": 1.0})


def test_loggers(home: Path, tmp_path: Path) -> None:
    import mlflow

    (tmp_path / "report.md").write_text("# report")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("a")
    with registry.start_run("logs") as rid:
        registry.log_params({"lr": 0.1, "model": {"layers": 2}, "long": "x" * 7000})
        registry.log_metrics({"loss": 2.0}, step=0)
        registry.log_metrics({"loss": 1.0}, step=1)
        registry.set_tags({"stage": "train"})
        registry.log_dict({"a": 1}, "cfg/config.json")
        registry.log_text("hello", "notes.txt")
        registry.log_image(Image.new("RGB", (8, 8), "red"), "images/red.png")
        registry.log_table(pd.DataFrame({"q": ["a"], "score": [0.5]}), "tables/preds.json")
        registry.log_artifact(tmp_path / "report.md")
        registry.log_artifact(tmp_path / "dir", artifact_path="bundle")
        registry.log_dataset_input("train", "d" * 32, str(tmp_path), context="training")
        registry.log_dataset_input("eval", "e" * 64, "dvc://data/eval", context="evaluation")
    # explicit run_id from outside the block (run already finished)
    registry.log_metrics({"late": 3.0}, run_id=rid)

    info = registry.get_run(rid)
    assert info["params"]["lr"] == "0.1" and info["params"]["model.layers"] == "2"
    assert len(info["params"]["long"]) == 6000
    assert info["metrics"] == {"loss": 1.0, "late": 3.0}
    assert info["tags"]["stage"] == "train"
    assert registry.run_url(rid) is None  # no UI server for a local store

    client = mlflow.MlflowClient()
    history = client.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.0)]
    artifacts = Path(info["artifact_uri"])
    assert json.loads((artifacts / "cfg/config.json").read_text()) == {"a": 1}
    assert (artifacts / "notes.txt").read_text() == "hello"
    assert Image.open(artifacts / "images/red.png").size == (8, 8)
    assert (artifacts / "tables/preds.json").is_file()
    assert (artifacts / "report.md").is_file() and (artifacts / "bundle/a.txt").is_file()

    inputs = {d.dataset.name: d for d in client.get_run(rid).inputs.dataset_inputs}
    train, evalset = inputs["train"], inputs["eval"]
    assert train.dataset.digest == "d" * 32
    assert train.dataset.source_type == "local"
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "training"
    # MLflow caps digests at 36 chars: the full one is kept as an input tag
    assert evalset.dataset.digest == "e" * 36
    assert {t.key: t.value for t in evalset.tags}["digest"] == "e" * 64
    assert evalset.dataset.source_type == "uri"
    assert json.loads(evalset.dataset.source) == {"uri": "dvc://data/eval"}


def test_concurrent_logging_from_threads(home: Path) -> None:
    with registry.start_run("parallel") as rid:
        barrier = threading.Barrier(4)

        def work(i: int) -> None:
            barrier.wait()
            registry.log_metrics({f"m{i}": float(i)}, run_id=rid)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, range(4)))
    assert registry.get_run(rid)["metrics"] == {f"m{i}": float(i) for i in range(4)}


def test_closed_runs_refuse_a_new_run_until_reopened(home: Path) -> None:
    """A stop closes the store to new runs: a thread still working cannot open one after the
    open runs were ended KILLED."""
    from registry.tracking import RunsClosed, close_runs

    close_runs("stopped by SIGTERM")
    try:
        with pytest.raises(RunsClosed, match="'late'.*stopped by SIGTERM"):
            with registry.start_run("late"):
                pass
    finally:
        close_runs(None)
    with registry.start_run("after") as run_id:
        assert registry.get_run(run_id)["status"] == "RUNNING"
