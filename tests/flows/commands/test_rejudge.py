"""`vlmforge evaluate --rejudge RUN_ID` on a real SQLite MLflow store: a judged suite's run holds
its frozen judge record (logged as the evaluate stage logs it); replaying it under the same
judge gives identical scores with no call to the judge, under another judge (flags) asks that
judge about every answer; each replay is a new run with its own record."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

import registry
from components.evaluation.judge_records import JudgeRecord, judge_rows
from components.evaluation.suites import JudgeSpec
from flows.commands.evaluate import add_evaluate_parser
from flows.stages.judge_records import log_judge_record
from registry.judge_runs import download_record, judged_runs
from tests.components.evaluation.test_judge_records import ROWS, CountingJudgeServer

ROOT = Path(__file__).resolve().parents[3]
MICRO = str(ROOT / "configs" / "micro.yaml")
SUITE = "judged_vqa"


@pytest.fixture
def server():
    with CountingJudgeServer() as running:
        yield running


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh VLMFORGE_HOME: `vlmforge evaluate` configures its SQLite store there."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VLMFORGE_HOME", str(tmp_path / "home"))
    registry.configure(tmp_path / "home")
    return tmp_path / "home"


def evaluated(spec: JudgeSpec, home: Path) -> tuple[str, str, dict[str, float]]:
    """A pipeline run with a judged suite's child run, logged as the evaluate stage logs it."""
    rows = [dict(r) for r in ROWS]
    with registry.start_run("pipeline") as parent:
        with registry.start_run(f"evaluate-{SUITE}", parent_run_id=parent,
                                tags={"stage": "evaluate", "suite": SUITE}) as run_id:
            metrics, record = judge_rows(spec, rows, home / "judge-cache")
            metrics = {f"{SUITE}_{k}": v for k, v in metrics.items()}
            registry.log_metrics(metrics)
            assert log_judge_record(record, SUITE) is None  # not stopped early
    return parent, run_id, metrics


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", "--recipe", MICRO, *argv])
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rejudge_replays_stored_predictions_without_new_calls(server, home, tmp_path, capsys):
    spec = JudgeSpec(backend="openai", model="judge-a", base_url=server.base_url)
    parent, run_id, metrics = evaluated(spec, home)
    assert len(server.calls) == 4
    run = registry.get_run(run_id)
    assert run["tags"]["judge_record"] == f"{SUITE}/judge" and run["tags"]["judge_calls"] == "4"
    config = tmp_path / "suites.yaml"
    config.write_text(yaml.safe_dump({SUITE: {"kind": "synthetic",
                                              "judge": spec.model_dump(exclude_none=True)}}))
    (home / "judge-cache").rename(home / "old-cache")  # the stored judgments alone answer

    code, out, err = cli(["--rejudge", parent, "--suite-config", str(config)], capsys)
    assert code == 0, err
    assert len(server.calls) == 4  # zero new judge calls
    assert f"{SUITE}: rejudged run {run_id} under openai:" in out and "(suite config)" in out
    assert "new judge calls 0, tokens 0" in out
    score = metrics[f"{SUITE}_judge_score"]
    assert f"{SUITE}_judge_score".ljust(40) + f"{score:.4f}  (recorded {score:.4f})" in out
    replays = [j for j in judged_runs(run_id) if j.run_id != run_id]  # children of the suite run
    assert replays == []  # the suite run holds a record itself: only it is replayed
    new_run = out.split(": run ")[1].split()[0]
    new = registry.get_run(new_run)
    assert new["metrics"] == metrics  # identical scores
    assert new["tags"]["rejudge_of"] == run_id and new["parent_run_id"] == run_id
    record = JudgeRecord.read(download_record(judged_runs(new_run)[0], tmp_path / "dl"))
    assert record.summary["calls"] == 0
    assert {j["source"] for j in record.judgments} == {"exact_match", "record"}

    # another judge named by flags is asked about every answer that is not an exact match
    code, out, err = cli(["--rejudge", run_id, "--judge-model", "judge-b"], capsys)
    assert code == 0, err
    assert server.calls[4:] == ["judge-b"] * 4
    assert "(flags)" in out and "new judge calls 4, tokens 420" in out


def test_rejudge_errors_exit_2(server, home, capsys):
    with registry.start_run("no-judge") as plain:
        pass
    code, _, err = cli(["--rejudge", plain], capsys)
    assert code == 2 and f"run {plain} holds no judge record" in err
    code, _, err = cli(["--rejudge", "0" * 32], capsys)
    assert code == 2 and "no MLflow run" in err
    _, run_id, _ = evaluated(JudgeSpec(backend="openai", model="judge-a",
                                       base_url=server.base_url), home)
    code, _, err = cli(["--rejudge", run_id, "--judge-api-key-env", "AWS_SECRET_ACCESS_KEY"],
                       capsys)
    assert code == 2 and "api_key_env 'AWS_SECRET_ACCESS_KEY' refused" in err
    assert len(server.calls) == 4  # nothing was sent under the refused judge
