"""Judge records on MLflow runs: a judged suite's run holds its record's files under the
artifact folder its ``judge_record`` tag names (``<suite>/judge``); `vlmforge evaluate
--rejudge RUN_ID` finds them on the run or, when it has none, on its child runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tracking import active_run_id, client, log_artifact, set_tags

JUDGE_RECORD_TAG = "judge_record"

__all__ = ["JUDGE_RECORD_TAG", "JudgedRun", "download_record", "judged_runs", "log_record"]


@dataclass(frozen=True)
class JudgedRun:
    """A run holding a judge record: its id, its suite and the record's artifact folder."""

    run_id: str
    suite: str
    path: str


def log_record(folder: str | Path, suite: str, run_id: str | None = None) -> str:
    """Log a record's folder as ``<suite>/judge`` of the run and tag the run with it."""
    run_id = active_run_id(run_id)
    path = f"{suite}/judge"
    log_artifact(folder, path, run_id=run_id)
    set_tags({JUDGE_RECORD_TAG: path}, run_id=run_id)
    return path


def _judged(run) -> JudgedRun | None:
    path = run.data.tags.get(JUDGE_RECORD_TAG)
    if not path:
        return None
    suite = run.data.tags.get("suite") or path.split("/", 1)[0]
    return JudgedRun(run.info.run_id, suite, path)


def judged_runs(run_id: str) -> list[JudgedRun]:
    """The run itself when it holds a judge record, else its child runs that do (oldest
    first); LookupError when the run does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    c = client()
    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        raise LookupError(f"no MLflow run {run_id!r} ({exc.message})") from None
    own = _judged(run)
    if own is not None:
        return [own]
    children = c.search_runs([run.info.experiment_id],
                             filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                             order_by=["attributes.start_time ASC"], max_results=1000)
    return [j for j in map(_judged, children) if j is not None]


def download_record(judged: JudgedRun, dst: str | Path) -> Path:
    """Download a run's record folder into ``dst``; its local path."""
    return Path(client().download_artifacts(judged.run_id, judged.path, str(dst)))
