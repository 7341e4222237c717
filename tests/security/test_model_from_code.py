"""6. A served version is logged from code, never pickled: `mlflow models serve` loads it with
pickle deserialization disabled, and `vlmforge serve` refuses a version whose code in the
artifact store is not the code registered with it (whoever can write the bucket cannot make
the server run their code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow.models import Model

import registry
from flows.commands.serve import (
    free_port,
    server_env,
    start_server,
    stop_server,
    wait_until_ready,
)
from registry.models import CODE_DIGEST_TAG, code_digest
from tests.security.helpers import GOOD_ROW, register_in

CODE_LOADER = "mlflow.pyfunc.loaders.code_model"


def _model_dir(model_uri: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def _model_id(model_uri: str) -> str:
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    return registry.version_info(name, version)["model_id"]


def test_a_version_is_code_not_a_pickle(serving_home: Path, tiny_model_uri: str, tmp_path: Path) -> None:
    local = _model_dir(tiny_model_uri, tmp_path)
    assert not list(local.rglob("*.pkl")) and not (local / "python_model.pkl").exists()
    flavor = Model.load(str(local / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == CODE_LOADER and "python_model" not in flavor
    assert Path(flavor["model_code_path"]).name == "served_model.py"
    assert (local / "served_model.py").read_text().count("set_model(VLMPyfunc())") == 1
    assert flavor["code"] == "code"
    for module in ("registry/pyfunc_model.py", "registry/serving_input.py",
                   "components/model/chat.py"):
        assert (local / "code" / module).is_file(), module
    assert not list((local / "code").rglob("__pycache__"))
    logged = mlflow.MlflowClient().get_logged_model(_model_id(tiny_model_uri))
    assert logged.tags[CODE_DIGEST_TAG] == code_digest(local)


def test_mlflow_models_serve_loads_it_without_unpickling(serving_home: Path, tiny_model_uri: str,
                                                         tmp_path: Path) -> None:
    port = free_port()
    env = server_env(tiny_model_uri)  # MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    log = (tmp_path / "mlflow-serve.log").open("wb")
    proc = subprocess.Popen([mlflow_cli, "models", "serve", "-m", tiny_model_uri,
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        try:
            wait_until_ready(proc, port)
        except (RuntimeError, TimeoutError):
            pytest.fail((tmp_path / "mlflow-serve.log").read_text()[-3000:])
        from flows.bench.soak import post

        reply = post(port, json.dumps({"dataframe_records": [GOOD_ROW]}).encode())
        assert reply.status == 200, reply
        # plain `mlflow models serve` has no guard: the rows' own caps still hold
        reply = post(port, json.dumps({"dataframe_records": [{**GOOD_ROW,
                                                               "image": "/etc/passwd"}]}).encode())
        assert reply.status == 400 and b"file path" in reply.body
    finally:
        stop_server(proc)


def test_code_changed_in_the_artifact_store_is_not_served(serving_store: Path,
                                                          tmp_path: Path) -> None:
    uri = register_in(serving_store, tmp_path / "model")
    logged = mlflow.MlflowClient().get_logged_model(_model_id(uri))
    stored = Path(urlparse(logged.artifact_location).path)
    code_file = stored / "served_model.py"
    assert code_file.is_file()
    code_file.write_text(code_file.read_text() + "\nimport os  # anything at all\n")
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = start_server(uri, port, stdout=out, stderr=subprocess.STDOUT)
    try:
        with pytest.raises(RuntimeError, match="exited"):
            wait_until_ready(proc, port)
    finally:
        stop_server(proc)
    assert "refusing to serve this model: its code differs" in log.read_text()
