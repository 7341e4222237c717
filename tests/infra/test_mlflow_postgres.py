"""MLflow tracking server on a PostgreSQL backend (as in infra/compose and infra/k8s):
runs only where PostgreSQL's server binaries exist. Starts a throwaway cluster and
`mlflow server --app-name basic-auth` on 127.0.0.1, logs a run with credentials, and
finds it in PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    auth = tmp / "basic_auth.ini"
    auth.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = postgresql+psycopg2://vlmforge@127.0.0.1:{postgres}/mlflow_auth\n"
                    f"admin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(auth),
               MLFLOW_FLASK_SERVER_SECRET_KEY="vlmforge-test-csrf-key")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"postgresql+psycopg2://vlmforge@127.0.0.1:{postgres}/mlflow",
         "--artifacts-destination", (tmp / "artifacts").as_uri(), "--serve-artifacts",
         "--app-name", "basic-auth"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
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
