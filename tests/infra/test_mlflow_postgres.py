"""MLflow tracking server on a PostgreSQL backend (as in infra/compose and infra/k8s):
runs only where PostgreSQL's server binaries exist. Starts a throwaway cluster and
`mlflow server --app-name basic-auth` on 127.0.0.1, logs a run with credentials, and
finds it in PostgreSQL. The slow tests (`-m slow`, ~2.5 and ~3 min on a busy 2-core machine)
run `vlmforge run --recipe configs/micro.yaml` against a plain `mlflow server` on a database
of their own: once, and twice at the same time, then read runs, registered versions, their
lineage tags and the `champion` alias straight from PostgreSQL's tables."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("pg_ctl") and shutil.which("initdb")),
    reason="PostgreSQL server binaries (pg_ctl, initdb) not installed")

ADMIN, PASSWORD = "admin", "vlmforge-test-password-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no `postgres` user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg2", reason="psycopg2(-binary) not installed")
    pytest.importorskip("flask_wtf", reason="Flask-WTF (mlflow[auth]) not installed")
    root = Path(tempfile.mkdtemp(prefix="vlmforge-pg-"))  # not under pytest's 0700 tmp dirs
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    subprocess.run(_as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "vlmforge"]),
                   check=True, capture_output=True, cwd=root)
    subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "start",
                                 "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"]),
                   check=True, capture_output=True, cwd=root)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="vlmforge", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("mlflow", "mlflow_auth"):
                cur.execute(f"CREATE DATABASE {db}")
        conn.close()
        yield port
    finally:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _mlflow_server(pg_port: int, database: str, tmp: Path, env: dict | None = None,
                   extra: tuple[str, ...] = ()) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with ``database`` as its backend store and artifacts
    proxied into ``tmp/artifacts``; yields its URL."""
    port = _free_port()
    env = dict(env or os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"postgresql+psycopg2://vlmforge@127.0.0.1:{pg_port}/{database}",
         "--artifacts-destination", (tmp / "artifacts").as_uri(), "--serve-artifacts", *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("mlflow server did not start:\n" + (tmp / "server.log").read_text()[-3000:])
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _create_database(pg_port: int, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="vlmforge", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-server")
    auth = tmp / "basic_auth.ini"
    auth.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = postgresql+psycopg2://vlmforge@127.0.0.1:{postgres}/mlflow_auth\n"
                    f"admin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(auth),
               MLFLOW_FLASK_SERVER_SECRET_KEY="vlmforge-test-csrf-key")
    with _mlflow_server(postgres, "mlflow", tmp, env, ("--app-name", "basic-auth")) as url:
        yield url


def test_requests_without_credentials_are_refused(mlflow_server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(mlflow_server + "/api/2.0/mlflow/experiments/search?max_results=1")
    assert err.value.code == 401


def test_run_is_logged_to_postgres(mlflow_server, postgres, monkeypatch, tmp_path):
    import psycopg2
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment("postgres-backend")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "stage", "sft")
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    (tmp_path / "note.txt").write_text("artifact through the server")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)

    got = client.get_run(run.info.run_id)
    assert got.data.params == {"stage": "sft"} and got.data.metrics == {"loss": 0.5}
    assert got.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    with psycopg2.connect(host="127.0.0.1", port=postgres, user="vlmforge", dbname="mlflow") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
            assert cur.fetchone() == ("FINISHED",)


# The micro pipeline against a tracking server on PostgreSQL (`vlmforge run` in subprocesses,
# as a user would run it): each test gets a database and a server of its own.

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"
MODEL, STAGES = "vlm-micro", ["pretrain-32px", "pretrain-64px", "sft", "align"]
BACKBONES = {"vision-micro", "lm-micro"}


def _start_pipeline(url: str, home: Path) -> tuple[subprocess.Popen, Path]:
    """`vlmforge run --recipe configs/micro.yaml` with its own VLMFORGE_HOME (DVC workspace,
    Prefect home) and MLflow at ``url``; nothing of the test's own environment leaks in."""
    env = dict(os.environ, VLMFORGE_HOME=str(home), MLFLOW_TRACKING_URI=url, OMP_NUM_THREADS="1")
    for key in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    home.mkdir(parents=True)
    log_path = home.with_name(home.name + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("vlmforge")), "run",
                                 "--recipe", str(MICRO)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, log_path


def _finish(proc: subprocess.Popen, log_path: Path, timeout: float = 900) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, f"vlmforge run failed ({proc.returncode}):\n" + log_path.read_text()[-4000:]


class _Pg:
    """Read-only queries on MLflow's tables in PostgreSQL."""

    def __init__(self, port: int, database: str):
        import psycopg2

        self.conn = psycopg2.connect(host="127.0.0.1", port=port, user="vlmforge", dbname=database)
        self.conn.autocommit = True

    def rows(self, sql: str, *args) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.rows("SELECT key, value FROM tags WHERE run_uuid = %s", run_id))

    def version_tags(self, name: str, version: int | str) -> dict[str, str]:
        return dict(self.rows("SELECT key, value FROM model_version_tags WHERE name = %s "
                              "AND version = %s", name, int(version)))

    def version_run(self, name: str, version: int | str) -> str:
        return self.rows("SELECT run_id FROM model_versions WHERE name = %s AND version = %s",
                         name, int(version))[0][0]

    def pipeline_runs(self) -> list[str]:
        return [r for (r,) in self.rows("SELECT run_uuid FROM runs WHERE name = 'pipeline-micro' "
                                        "AND status = 'FINISHED' ORDER BY start_time")]

    def champion(self, name: str = MODEL) -> int | None:
        got = self.rows("SELECT version FROM registered_model_aliases WHERE name = %s "
                        "AND alias = 'champion'", name)
        return got[0][0] if got else None

    def lineage(self, final_version: str) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
        """Walk `parent_version` tags from ``final_version`` back to the backbones: the
        (stage, version, run_id) chain, first stage first, and the backbone versions."""
        chain, version = [], final_version
        while not version.startswith("backbones:"):
            tags = self.version_tags(MODEL, version)
            chain.append((tags["stage"], int(version), self.version_run(MODEL, version)))
            version = tags["parent_version"]
        backbones = dict(item.split("=") for item in version.removeprefix("backbones:").split(","))
        return chain[::-1], {k: int(v) for k, v in backbones.items()}

    def close(self) -> None:
        self.conn.close()


@pytest.mark.slow  # a whole `vlmforge run`: ~2 min (make test-slow)
def test_micro_pipeline_lands_in_postgres(postgres, tmp_path):
    """Runs, registered versions and the `champion` alias of a whole `vlmforge run` end up in
    PostgreSQL; artifacts in the server's artifact store; nothing in the local home."""
    from mlflow import MlflowClient

    _create_database(postgres, "mlflow_pipeline")
    with _mlflow_server(postgres, "mlflow_pipeline", tmp_path) as url:
        proc, log = _start_pipeline(url, tmp_path / "home")
        _finish(proc, log)
        pg = _Pg(postgres, "mlflow_pipeline")
        try:
            (pipeline_run,) = pg.pipeline_runs()
            run_tags = pg.run_tags(pipeline_run)
            chain, backbones = pg.lineage(run_tags["final_version"])
            assert [stage for stage, _, _ in chain] == STAGES
            assert set(backbones) == BACKBONES
            for _, _, run_id in chain:  # every stage trained inside this pipeline run
                assert pg.run_tags(run_id)["mlflow.parentRunId"] == pipeline_run
            for name, version in backbones.items():
                assert pg.run_tags(pg.version_run(name, version))["mlflow.parentRunId"] == pipeline_run
            versions = pg.rows("SELECT version, status FROM model_versions WHERE name = %s", MODEL)
            assert sorted(versions) == [(v, "READY") for _, v, _ in chain]
            assert pg.champion() == int(run_tags["champion"]) == chain[-1][1]
            statuses = dict(pg.rows("SELECT status, count(*) FROM runs GROUP BY status"))
            assert set(statuses) == {"FINISHED"} and statuses["FINISHED"] >= 1 + len(STAGES) + 2
            final_run = chain[-1][2]
            artifacts = {a.path for a in MlflowClient(tracking_uri=url).list_artifacts(final_run)}
            assert "model_card.md" in artifacts
        finally:
            pg.close()
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").rglob("model_card.md"))
    home = tmp_path / "home"
    assert not (home / "mlflow.db").exists() and not (home / "mlartifacts").exists()
    assert (home / "data" / "micro" / "dvc.lock").exists()  # the data stays in the home's DVC repo


@pytest.mark.slow
def test_two_pipelines_at_once_share_server_without_clobbering(postgres, tmp_path):
    """Two `vlmforge run`s started together against one server (one PostgreSQL store, one
    artifact store, one registered model name), each with its own home (DVC workspace and
    Prefect): both finish; a version a pipeline trains starts from the version its own
    previous stage produced (a stage or backbone the other pipeline registered first may be
    reused: same cache key); every run FINISHED, every version READY, and `champion` ends on
    the final version of one of the two."""
    _create_database(postgres, "mlflow_concurrent")
    with _mlflow_server(postgres, "mlflow_concurrent", tmp_path) as url:
        started = [_start_pipeline(url, tmp_path / f"home-{i}") for i in (0, 1)]
        for proc, log in started:
            _finish(proc, log)
    pg = _Pg(postgres, "mlflow_concurrent")
    try:
        pipelines = pg.pipeline_runs()
        assert len(pipelines) == 2
        finals, report, races = {}, {}, []
        for pipeline_run in pipelines:
            run_tags = pg.run_tags(pipeline_run)
            chain, backbones = pg.lineage(run_tags["final_version"])
            assert [stage for stage, _, _ in chain] == STAGES
            assert set(backbones) == BACKBONES
            finals[pipeline_run] = chain[-1][1]
            # what this pipeline trained itself: versions whose run is a child of its run
            trained = {(name, stage): str(version) for name, version, stage in pg.rows(
                "SELECT mv.name, mv.version, vt.value FROM model_versions mv "
                "JOIN tags t ON t.run_uuid = mv.run_id AND t.key = 'mlflow.parentRunId' "
                "JOIN model_version_tags vt ON vt.name = mv.name AND vt.version = mv.version "
                "AND vt.key = 'stage' WHERE t.value = %s", pipeline_run)}
            report[pipeline_run] = {
                "lineage": [f"{stage}=v{v}" for stage, v, _ in chain], "backbones": backbones,
                "trained": sorted(f"{n}:{s}=v{v}" for (n, s), v in trained.items()),
                "champion_at_end": run_tags["champion"]}
            # a version this pipeline trained must start from its own previous stage's version
            for prev, stage in itertools.pairwise(STAGES):
                if (MODEL, stage) in trained and (MODEL, prev) in trained:
                    parent = pg.version_tags(MODEL, trained[(MODEL, stage)])["parent_version"]
                    if parent != trained[(MODEL, prev)]:
                        races.append(f"{pipeline_run[:8]}: {stage} v{trained[(MODEL, stage)]} "
                                     f"starts from {prev} v{parent}, not its own "
                                     f"v{trained[(MODEL, prev)]}")
            if (MODEL, STAGES[0]) in trained:
                parent = pg.version_tags(MODEL, trained[(MODEL, STAGES[0])])["parent_version"]
                for name in BACKBONES:
                    own = trained.get((name, "backbones"))
                    if own and f"{name}={own}" not in parent:
                        races.append(f"{pipeline_run[:8]}: {STAGES[0]} starts from {parent}, "
                                     f"not its own {name} v{own}")
        print(json.dumps(report, indent=1))
        assert not races, "\n".join(races) + "\n" + json.dumps(report, indent=1)
        assert pg.rows("SELECT DISTINCT status FROM model_versions") == [("READY",)]
        assert pg.champion() in finals.values()
        assert pg.rows("SELECT DISTINCT status FROM runs") == [("FINISHED",)]
    finally:
        pg.close()
