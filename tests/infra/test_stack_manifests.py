"""infra/compose and infra/k8s parse, and every service name, port, bucket, database,
secret and volume that one file references exists where another file defines it
(no docker or cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
K8S = INFRA / "k8s"
URL = re.compile(r"(?:https?|postgresql(?:\+\w+)?|tcp)://(?:[^@/\s\"']*@)?([A-Za-z0-9.\-]+):(\d+)"
                 r"(?:/([A-Za-z0-9_]+))?")
SERVICES = {"postgres", "minio", "minio-buckets", "mlflow", "prefect-server", "prefect-worker"}


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _secret_refs(node):
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]
        for v in node.values():
            yield from _secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _secret_refs(v)


def _k8s_docs() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(K8S.glob("*.yaml"))}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict]]:
    return _k8s_docs()


@pytest.fixture(scope="module")
def service_ports(k8s) -> dict[str, set[int]]:
    """Kubernetes Service name -> ports: the contract both stacks follow."""
    return {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
            for docs in k8s.values() for d in docs if d["kind"] == "Service"}


def _databases() -> set[str]:
    sql = (INFRA / "compose" / "postgres-init.sql").read_text()
    return set(re.findall(r"CREATE DATABASE (\w+)", sql))


def test_compose_services_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        assert svc.get("networks") == ["vlmforge"], name
    assert compose["networks"]["vlmforge"]["name"] == "vlmforge"


def test_compose_publishes_on_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_urls_point_at_defined_services_and_ports(compose, service_ports):
    databases = _databases()
    seen = set()
    for name, svc in compose["services"].items():
        for text in _strings(svc):
            for host, port, path in URL.findall(text.replace("$$", "$")):
                if host == "127.0.0.1":
                    continue
                assert host in compose["services"], f"{name}: {host} is no service"
                assert int(port) in service_ports[host], f"{name}: {host}:{port}"
                if host == "postgres":
                    assert path in databases, f"{name}: database {path!r} not created"
                seen.add(f"{host}:{port}")
    assert {"postgres:5432", "minio:9000", "prefect-server:4200"} <= seen
    published = {str(p).split(":")[-1] for s in compose["services"].values() for p in s.get("ports", [])}
    assert {"5000", "4200", "9000"} <= published


def test_compose_buckets_and_variables(compose):
    services = compose["services"]
    created = set(re.findall(r"store/(\w+)", services["minio-buckets"]["entrypoint"]))
    mlflow_cmd = services["mlflow"]["entrypoint"]
    assert set(re.findall(r"s3://(\w+)", mlflow_cmd)) <= created
    assert {"mlflow", "dvc"} <= created
    assert "--app-name basic-auth" in mlflow_cmd and "--serve-artifacts" in mlflow_cmd
    example = {line.split("=", 1)[0] for line in (INFRA / "compose" / "env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= example, used - example


def test_prefect_work_pool_files_match_the_compose_stack(compose):
    docker = yaml.safe_load((INFRA / "prefect" / "docker.yaml").read_text())
    variables = docker["definitions"]["work_pool"]["job_variables"]
    assert compose["networks"][variables["networks"][0]]["name"] == variables["networks"][0]
    volume = variables["volumes"][0].split(":")[0]
    assert compose["volumes"][volume]["name"] == volume
    host, port, _ = URL.findall(variables["env"]["MLFLOW_TRACKING_URI"])[0]
    assert host in compose["services"] and f"127.0.0.1:{port}:{port}" in compose["services"][host]["ports"]
    assert "vlmforge-docker" in compose["services"]["prefect-worker"]["command"]
    assert docker["definitions"]["work_pool"]["name"] == "vlmforge-docker"


def test_k8s_documents_are_well_formed(k8s):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == set(k8s) - {"kustomization.yaml", "secrets.example.yaml"}
    for name, docs in k8s.items():
        if name == "kustomization.yaml":
            continue
        for d in docs:
            assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), name
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == "vlmforge", (name, d["metadata"]["name"])


def test_k8s_services_select_workloads_and_ports(k8s):
    docs = [d for name, ds in k8s.items() if name != "kustomization.yaml" for d in ds]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        matches = [w for w in workloads
                   if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, svc["metadata"]["name"]
        ports = {p["containerPort"] for c in matches[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, svc["metadata"]["name"]


def test_k8s_references_resolve(k8s, service_ports):
    docs = [d for name, ds in k8s.items() if name != "kustomization.yaml" for d in ds]
    secret = next(d for d in docs if d["kind"] == "Secret")
    sql = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["10-databases.sql"]
    databases = set(re.findall(r"CREATE DATABASE (\w+)", sql))
    assert databases == _databases()  # compose and k8s create the same databases
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    checked = 0
    for d in docs:
        for text in _strings(d):
            for host, port, path in URL.findall(text):
                if host == "127.0.0.1":
                    continue
                short = host.removesuffix(".vlmforge.svc.cluster.local")
                assert short in service_ports and int(port) in service_ports[short], (d["metadata"]["name"], host, port)
                if short == "postgres":
                    assert path in databases
        for ref in _secret_refs(d):
            assert ref["name"] == "vlmforge-secrets" and ref["key"] in secret["stringData"], ref
            checked += 1
        sa = d.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName")
        assert sa is None or sa in accounts
    assert checked >= 10
    flows = yaml.safe_load((INFRA / "prefect" / "kubernetes.yaml").read_text())["definitions"]["work_pool"]
    assert flows["job_variables"]["service_account_name"] in accounts
    assert flows["job_variables"]["namespace"] == "vlmforge"
    host, port, _ = URL.findall(flows["job_variables"]["env"]["MLFLOW_TRACKING_URI"])[0]
    assert int(port) in service_ports[host.removesuffix(".vlmforge.svc.cluster.local")]
    assert any("vlmforge-k8s" in s for d in docs for s in _strings(d))
