"""Hardening of the production stack and of names: the stack refuses the example secrets at
start, no secret is ever on a command line, the Prefect API asks for basic auth on the
server and every client, only a socket proxy with an allow-list holds the Docker socket,
every image and package is at an exact version, and recipe, stage and registered-model names
(which become paths) keep to [A-Za-z0-9._-]. No docker or cluster needed; the live Prefect
auth check is slow."""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_DIR = INFRA / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
K8S = {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
       for p in sorted((INFRA / "k8s").glob("*.yaml"))}
SECRET_KEYS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
               "MLFLOW_FLASK_SERVER_SECRET_KEY", "PREFECT_AUTH_STRING")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, COMPOSE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_secrets = _module("check_secrets")


def _env_example() -> dict[str, str]:
    lines = (COMPOSE_DIR / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _k8s_example() -> dict[str, str]:
    return K8S["secrets.example.yaml"][0]["stringData"]


def _strong() -> dict[str, str]:
    values = {k: secrets.token_urlsafe(24) for k in SECRET_KEYS}
    values["PREFECT_AUTH_STRING"] = f"admin:{secrets.token_urlsafe(24)}"
    return values


def _run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The start-up check as the containers run it: a process of its own."""
    base = {k: v for k, v in os.environ.items() if k not in SECRET_KEYS}
    return subprocess.run([sys.executable, str(COMPOSE_DIR / "check_secrets.py")],
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


# ---- example secrets are refused at start ----------------------------------------------------

def test_the_check_knows_every_example_secret():
    assert set(check_secrets.EXAMPLE_VALUES) == set(SECRET_KEYS)
    for example in (_env_example(), _k8s_example()):
        assert {k: example[k] for k in SECRET_KEYS} == check_secrets.EXAMPLE_VALUES


@pytest.mark.parametrize("example", [_env_example, _k8s_example], ids=["compose", "k8s"])
def test_the_example_secrets_are_refused_at_start(example):
    proc = _run_check(example())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refusing to start" in proc.stderr
    for key in SECRET_KEYS:
        assert f"{key}: still the example value" in proc.stderr, (key, proc.stderr)


def test_changed_secrets_pass_and_files_count_as_sources(tmp_path):
    values = _strong()
    assert _run_check(values).returncode == 0
    path = tmp_path / "pg"
    path.write_text(values.pop("POSTGRES_PASSWORD") + "\n")  # a mounted secret file
    proc = _run_check({**values, "POSTGRES_PASSWORD_FILE": str(path)})
    assert proc.returncode == 0, proc.stderr
    path.write_text(check_secrets.EXAMPLE_VALUES["POSTGRES_PASSWORD"])
    proc = _run_check({**values, "POSTGRES_PASSWORD_FILE": str(path)})
    assert proc.returncode == 1 and "POSTGRES_PASSWORD: still the example value" in proc.stderr


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("POSTGRES_PASSWORD", "", "not set"),
    ("MINIO_ROOT_PASSWORD", "change-me-please-really", "'change-me' placeholder"),
    ("MLFLOW_ADMIN_PASSWORD", "short", "shorter than 12"),
    ("PREFECT_AUTH_STRING", "admin:short", "shorter than 12"),
    ("PREFECT_AUTH_STRING", "no-colon-in-this-one", "shorter than 12"),
])
def test_weak_secrets_are_refused(key, value, rule):
    found = check_secrets.problems({**_strong(), key: value})
    assert found and found[0].startswith(key) and rule in found[0], found


# ---- no secret on a command line -------------------------------------------------------------

def _shell_texts(node) -> list[str]:
    """Every command / entrypoint / args string of a compose service or k8s container."""
    out = []
    for key in ("command", "entrypoint", "args"):
        value = node.get(key)
        out += [value] if isinstance(value, str) else [str(v) for v in value or []]
    return out


def _secret_uses(text: str) -> list[str]:
    names = "|".join(SECRET_KEYS + ("MINIO_ROOT_USER",))
    return re.findall(rf"\$\$?\{{?({names})\b", text)


def _without_exports(text: str) -> str:
    """The shell text minus `export NAME="..."` assignments (builtins: in no process's argv)."""
    return re.sub(r"export \w+=\S+", "", text)


def _containers():
    for name, docs in K8S.items():
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                yield f"{name}:{c['name']}", c


def test_no_secret_reaches_a_command_line_in_compose_or_k8s():
    nodes = [*COMPOSE["services"].items(), *_containers()]
    for name, node in nodes:
        for text in _shell_texts(node):
            assert not _secret_uses(_without_exports(text)), (name, text)
    for name, c in _containers():  # and never via Kubernetes' own $(VAR) expansion
        assert not any("$(" in t for t in _shell_texts(c)), name


def test_the_mlflow_server_starts_with_no_secret_in_its_argv(tmp_path):
    """start_mlflow.py as the image runs it, exec'ing a stand-in `mlflow` that records what it
    was given: the argv holds no secret, libpq gets PGPASSWORD, the auth config is 0600."""
    values = _strong()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    stub = bin_dir / "mlflow"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}.argv\nenv > {record}.env\n")
    stub.chmod(0o755)
    config = tmp_path / "basic_auth.ini"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MLFLOW_AUTH_CONFIG_PATH": str(config),
           **{k: values[k] for k in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                                      "MLFLOW_FLASK_SERVER_SECRET_KEY")}}
    proc = subprocess.run([sys.executable, str(COMPOSE_DIR / "start_mlflow.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = Path(f"{record}.argv").read_text()
    assert argv.splitlines()[:1] == ["server"] and "--app-name" in argv
    for value in values.values():
        assert value not in argv
    assert "postgresql+psycopg2://vlmforge@postgres:5432/mlflow" in argv  # no password in it
    child_env = dict(line.split("=", 1) for line in Path(f"{record}.env").read_text().splitlines()
                     if "=" in line)
    assert child_env["PGPASSWORD"] == values["POSTGRES_PASSWORD"]
    assert "POSTGRES_PASSWORD" not in child_env
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert values["MLFLOW_ADMIN_PASSWORD"] in text and values["POSTGRES_PASSWORD"] not in text


def test_the_mlflow_server_refuses_the_example_secrets(tmp_path):
    env = {"PATH": os.environ["PATH"], "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
           **{k: check_secrets.EXAMPLE_VALUES[k] for k in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                                                           "MLFLOW_FLASK_SERVER_SECRET_KEY")}}
    proc = subprocess.run([sys.executable, str(COMPOSE_DIR / "start_mlflow.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "refusing to start the MLflow server" in proc.stderr
    assert not (tmp_path / "auth.ini").exists()


def test_every_k8s_workload_checks_the_secrets_before_it_starts():
    for name, docs in K8S.items():
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet"):
                init = d["spec"]["template"]["spec"].get("initContainers", [])
                assert [c["command"] for c in init] == [["python", "/opt/vlmforge/check_secrets.py"]], name
                assert init[0]["envFrom"] == [{"secretRef": {"name": "vlmforge-secrets"}}]


# ---- Prefect API auth ----------------------------------------------------------------------

def test_prefect_api_asks_for_basic_auth_on_the_server_and_every_client():
    services = COMPOSE["services"]
    auth = "${PREFECT_AUTH_STRING:?set in infra/compose/.env}"
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == auth
    assert services["prefect-worker"]["environment"]["PREFECT_API_AUTH_STRING"] == auth
    containers = dict(_containers())

    def secret_env(container: str, name: str) -> str:
        env = {e["name"]: e for e in containers[container]["env"]}
        return env[name]["valueFrom"]["secretKeyRef"]["key"]

    assert secret_env("prefect-server.yaml:prefect-server", "PREFECT_SERVER_API_AUTH_STRING") == \
        "PREFECT_AUTH_STRING"
    assert secret_env("prefect-worker.yaml:worker", "PREFECT_API_AUTH_STRING") == "PREFECT_AUTH_STRING"
    readme = (INFRA / "README.md").read_text()
    assert "PREFECT_API_AUTH_STRING" in readme  # the clients' side is documented


@pytest.mark.slow
def test_a_prefect_server_with_the_auth_setting_refuses_clients_without_it(tmp_path):
    """A real Prefect server on 127.0.0.1 with PREFECT_SERVER_API_AUTH_STRING: 401 without
    credentials, 200 with them; the health probe stays open."""
    import base64

    from flows.commands.ui import free_port, start_prefect_server, stop, wait_until_ready

    port, auth = free_port(), f"admin:{secrets.token_urlsafe(16)}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_API_AUTH_STRING": auth}
    proc = start_prefect_server(port, env, ui=False)
    url = f"http://127.0.0.1:{port}/api"
    try:
        assert wait_until_ready([f"{url}/health"], [proc])

        def status(headers: dict[str, str]) -> int:
            request = urllib.request.Request(f"{url}/flows/filter", data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        token = base64.b64encode(auth.encode()).decode()
        assert status({}) == 401
        assert status({"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}) == 401
        assert status({"Authorization": f"Basic {token}"}) == 200
    finally:
        stop([proc])


# ---- the Docker socket ---------------------------------------------------------------------

def test_only_the_socket_proxy_mounts_the_docker_socket():
    services = COMPOSE["services"]
    holders = [n for n, s in services.items()
               if any("docker.sock" in str(v) for v in s.get("volumes", []))]
    assert holders == ["docker-api"]
    proxy = services["docker-api"]
    assert proxy["networks"] == ["docker-api"] and not proxy.get("ports")
    assert COMPOSE["networks"]["docker-api"]["internal"] is True
    members = [n for n, s in services.items() if "docker-api" in s.get("networks", [])]
    assert sorted(members) == ["docker-api", "prefect-worker"]
    assert services["prefect-worker"]["environment"]["DOCKER_HOST"] == "tcp://docker-api:2375"
    allowed = {k for k, v in proxy["environment"].items() if v == "1"}
    assert allowed == {"CONTAINERS", "IMAGES", "NETWORKS", "POST", "VERSION", "PING"}
    for denied in ("EXEC", "VOLUMES", "BUILD", "SWARM", "SECRETS", "SYSTEM", "PLUGINS"):
        assert proxy["environment"][denied] == "0", denied
    readme = (INFRA / "README.md").read_text()
    assert "socket proxy" in readme and "docker-api" in readme


# ---- pinned images and packages ------------------------------------------------------------

PINNED_IMAGE = re.compile(r"^[\w./-]+(?::[\w.-]*\d+\.\d+[\w.-]*|:RELEASE\.[\w.-]+|@sha256:[0-9a-f]{64})$")


def _dockerfiles() -> list[Path]:
    return sorted(INFRA.rglob("*Dockerfile"))


def test_every_image_is_pinned_to_an_exact_version():
    images = [s["image"] for s in COMPOSE["services"].values() if "image" in s]
    images += [c["image"] for _, c in _containers()]
    images += [line.split()[1] for f in _dockerfiles() for line in f.read_text().splitlines()
               if line.startswith("FROM ")]
    assert len(images) >= 12
    for image in images:
        assert PINNED_IMAGE.match(image), f"{image} is not pinned to an exact version or digest"
        assert "latest" not in image


def test_every_package_in_the_images_is_pinned():
    for dockerfile in _dockerfiles():
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in (ln for ln in text.splitlines() if "pip install" in ln and not ln.startswith("#")):
            packages = [w.strip('"') for w in line.split("pip install", 1)[1].split()
                        if not w.startswith("-") and not w.startswith('"$') and w not in (".", "-e")]
            packages = [p for p in packages if not p.startswith("$") and p != "."]
            for package in packages:
                assert "==" in package, f"{dockerfile.name}: {package} is not pinned"
    for name in ("docker.yaml", "kubernetes.yaml"):  # the flow-run image: tagged by commit
        text = (INFRA / "prefect" / name).read_text()
        assert 'tag: "{{ git-sha.stdout }}"' in text and "tag: latest" not in text
        assert re.findall(r"requires: (\S+)", text) and all(
            "==" in r for r in re.findall(r"requires: (\S+)", text))


# ---- names become paths --------------------------------------------------------------------

def _micro() -> dict:
    return yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "with space", ".hidden", "-flag", "x" * 129,
                                 "naïve", "a\\b", ""])
@pytest.mark.parametrize("field", ["name", "registered_model", "stage", "vision", "text"])
def test_names_outside_the_rule_are_refused_naming_it(field, bad):
    from pydantic import ValidationError

    from components.recipe import NAME_RULE, Recipe

    raw = _micro()
    if field in ("name", "registered_model"):
        raw[field] = bad
    elif field == "stage":
        raw["stages"][0]["name"] = bad
    else:
        raw["backbones"][field]["registered_model"] = bad
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate(raw)
    assert NAME_RULE in str(err.value) and "[A-Za-z0-9._-]" in str(err.value)


def test_every_shipped_recipe_keeps_to_the_name_rule():
    from components.recipe import load_recipe

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict) and "stages" in raw:
            load_recipe(path)
