"""Experiment tracking: store configuration, runs and thin loggers.

Every logger takes an explicit ``run_id`` or falls back to the run made active
by :func:`start_run` in the calling thread. MLflow is imported lazily.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_EXPERIMENT = "vlmforge"
MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
MAX_DIGEST_LEN = 36  # MLflow's limit for a dataset digest


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs, registered models and artifacts live."""

    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: Path


_lock = threading.RLock()
_config: TrackingConfig | None = None
_own_uris: set[str] = set()  # URIs we exported to MLFLOW_TRACKING_URI ourselves (per home)
_experiments: dict[tuple[str, str], str] = {}
_closed: str | None = None  # why no new run may start (a stop is under way), else None


class RunsClosed(RuntimeError):
    """A run was asked for after `close_runs`: the process is stopping."""


def close_runs(reason: str | None) -> None:
    """Refuse every later `start_run` in this process, saying ``reason`` (a stop: a thread
    still working must not open a run after the open ones were ended); None reopens."""
    global _closed
    _closed = reason


def configure(home: Path) -> TrackingConfig:
    """Point MLflow at ``home`` (SQLite store + local artifacts) unless MLFLOW_TRACKING_URI is set.

    Idempotent; calling it with another home re-targets the process.
    """
    global _config
    home = Path(home).expanduser().resolve()
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    # mlflow.set_tracking_uri exports the env var itself: only a foreign value counts as user-set
    # (a value we exported for an earlier home, restored by whoever saved the env, is ours too).
    user_uri = env_uri if env_uri and env_uri not in _own_uris else None
    uri = user_uri or f"sqlite:///{home}/mlflow.db"
    config = TrackingConfig(home, uri, uri, home / "mlartifacts")
    with _lock:
        if config == _config:
            return config
        import mlflow

        home.mkdir(parents=True, exist_ok=True)
        if uri.startswith("sqlite:"):
            config.artifact_root.mkdir(parents=True, exist_ok=True)
            _init_sqlite(uri, config.artifact_root)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if not user_uri:
            _own_uris.add(uri)
        _config = config
    return config


def _init_sqlite(uri: str, artifact_root: Path) -> None:
    """Create the schema ourselves so the Default experiment's artifacts land under ``home``."""
    db_path = Path(uri.removeprefix("sqlite:///"))
    if db_path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, str(artifact_root)).engine.dispose()


def current_config() -> TrackingConfig:
    """The active configuration; raises if :func:`configure` was never called."""
    if _config is None:
        raise RuntimeError("registry is not configured: call registry.configure(home) first")
    return _config


def client() -> MlflowClient:
    """An MlflowClient bound to the configured store."""
    from mlflow import MlflowClient

    cfg = current_config()
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)


def experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """Get or create experiment ``name``; returns its id."""
    from mlflow.exceptions import MlflowException

    cfg = current_config()
    key = (cfg.tracking_uri, name)
    if key in _experiments:
        return _experiments[key]
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is None:
        location = None
        if cfg.tracking_uri.startswith("sqlite:"):
            location = str(cfg.artifact_root / re.sub(r"[^A-Za-z0-9._-]+", "_", name))
        try:
            exp_id = c.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another stage
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    _experiments[key] = exp_id
    return exp_id


@contextmanager
def start_run(
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    experiment_name: str | None = None,
) -> Iterator[str]:
    """Start run ``name`` (a child of ``parent_run_id`` if given) and yield its id.

    The parent need not be active in this thread or process. The run is active in
    this thread for the block; it ends FINISHED, or FAILED (KILLED on Ctrl-C) on error.
    The experiment defaults to the parent's, else ``DEFAULT_EXPERIMENT``.
    """
    import mlflow
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if _closed is not None:
        raise RunsClosed(f"no new MLflow run ({name!r}): {_closed}")
    c = client()
    if experiment_name is not None:
        exp_id = experiment(experiment_name)
    elif parent_run_id is not None:
        exp_id = c.get_run(parent_run_id).info.experiment_id
    else:
        exp_id = experiment(DEFAULT_EXPERIMENT)
    run_tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_run_id is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    # Create through the client (no check against this thread's active run), then activate it.
    run_id = c.create_run(exp_id, run_name=name, tags=resolve_tags(run_tags)).info.run_id
    mlflow.start_run(run_id=run_id, nested=True)
    status = "FINISHED"
    try:
        yield run_id
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            c.set_terminated(run_id, status)


def active_run_id(run_id: str | None = None) -> str:
    """``run_id`` if given, else the id of this thread's active run."""
    if run_id:
        return run_id
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active run: pass run_id or log inside registry.start_run()")
    return run.info.run_id


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log params; nested mappings are flattened with '.', long values truncated.

    MLflow params are immutable: re-logging a key with another value raises.
    """
    from mlflow.entities import Param

    items = [
        Param(k, s if len(s := str(v)) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "...")
        for k, v in _flatten(params).items()
    ]
    if items:
        client().log_batch(active_run_id(run_id), params=items)


def log_metrics(
    metrics: Mapping[str, float], step: int | None = None, run_id: str | None = None
) -> None:
    """Log numeric metrics at ``step`` (default 0)."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
    if items:
        client().log_batch(active_run_id(run_id), metrics=items)


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set run tags (values are stringified)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    if items:
        client().log_batch(active_run_id(run_id), tags=items)


def log_dict(obj: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Save a JSON/YAML-serialisable object as ``artifact_file`` (.json/.yaml)."""
    client().log_dict(active_run_id(run_id), obj, artifact_file)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Save ``text`` as ``artifact_file``."""
    client().log_text(active_run_id(run_id), text, artifact_file)


def log_image(image: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Save a PIL image (or numpy array) as ``artifact_file``."""
    client().log_image(active_run_id(run_id), image, artifact_file=artifact_file)


def log_table(data: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Save a pandas DataFrame or dict of columns as a JSON table (appends if it exists)."""
    client().log_table(active_run_id(run_id), data, artifact_file)


def log_artifact(
    path: str | Path, artifact_path: str | None = None, run_id: str | None = None
) -> None:
    """Upload a local file or directory under ``artifact_path``."""
    c, rid = client(), active_run_id(run_id)
    if Path(path).is_dir():
        c.log_artifacts(rid, str(path), artifact_path)
    else:
        c.log_artifact(rid, str(path), artifact_path)


def log_dataset_input(
    name: str,
    digest: str,
    source: str,
    context: str = "training",
    *,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Record a dataset input (metadata only) with the given digest and source URI.

    MLflow caps digests at 36 characters; a longer digest is truncated and the full
    value kept in the input tag ``digest``.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    input_tags = dict(tags or {})
    if len(digest) > MAX_DIGEST_LEN:
        input_tags["digest"] = digest
    meta = MetaDataset(_dataset_source(source), name=name, digest=digest[:MAX_DIGEST_LEN])
    d = meta.to_dict()
    entity = Dataset(
        name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"]
    )
    input_tags[MLFLOW_DATASET_CONTEXT] = context
    dataset_input = DatasetInput(entity, [InputTag(k, str(v)) for k, v in input_tags.items()])
    client().log_inputs(active_run_id(run_id), datasets=[dataset_input])


def _dataset_source(source: str) -> Any:
    """Resolve ``source`` to an MLflow dataset source (local path, http, s3...) or a plain URI."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve_dataset_source(source)
    except MlflowException:
        from ._uri_source import URIDatasetSource

        return URIDatasetSource(source)


def get_run(run_id: str) -> dict[str, Any]:
    """Params, metrics (latest values), tags and status of a run, plus a few ids."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    run = client().get_run(run_id)
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
        "parent_run_id": run.data.tags.get(MLFLOW_PARENT_RUN_ID),
        "artifact_uri": run.info.artifact_uri,
    }


def run_url(run_id: str) -> str | None:
    """UI link for a run when tracking goes to an HTTP server; None for local stores."""
    uri = current_config().tracking_uri
    if not uri.startswith(("http://", "https://")):
        return None
    exp_id = client().get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"


def end_interrupted_runs(tag: str, value: str, since: float) -> list[str]:
    """End KILLED the runs tagged ``tag`` = ``value`` (one command's runs) that a stop left
    RUNNING, or that ended FAILED at or after ``since`` (epoch seconds: when the stop signal
    came; Prefect's `TerminationSignal` passing through `start_run` ends a run FAILED).
    Returns the names of the runs the stop interrupted (those and the ones `start_run`
    already ended KILLED since), oldest first; nothing when the store was never configured
    (no run can have started)."""
    if _config is None:
        return []
    from mlflow.entities import ViewType

    c = client()
    experiments = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    runs = c.search_runs(experiments, filter_string=f"tags.`{tag}` = '{value}'",
                         run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                         order_by=["attributes.start_time ASC"])
    ended = []
    for run in runs:
        info = run.info
        after = (info.end_time or 0) >= since * 1000 - 1000  # (end times are whole ms)
        if info.status == "RUNNING" or (info.status == "FAILED" and after):
            c.set_terminated(info.run_id, "KILLED")
            ended.append(info.run_name)
        elif info.status == "KILLED" and after:
            ended.append(info.run_name)
    return ended
