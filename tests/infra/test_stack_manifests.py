"""infra/compose and infra/k8s parse, and every service name, port, bucket, database,
secret and volume that one file references exists where another file defines it; the
Kubernetes NetworkPolicies allow exactly the flows the stack needs (no docker or cluster
needed)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
K8S = INFRA / "k8s"
URL = re.compile(r"(?:https?|postgresql(?:\+\w+)?|tcp)://(?:[^@/\s\"']*@)?([A-Za-z0-9.\-]+):(\d+)"
                 r"(?:/([A-Za-z0-9_]+))?")
COMPOSE_ONLY_PORTS = {"docker-api": {2375}}  # the Docker socket proxy: no Kubernetes twin
SERVICES = {"secrets-check", "postgres", "minio", "minio-buckets", "mlflow", "prefect-server",
            "docker-api", "prefect-worker"}


def _module(name: str):
    """A start-up script of infra/compose, imported from its file."""
    spec = importlib.util.spec_from_file_location(name, INFRA / "compose" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        if "secretRef" in node:  # envFrom: the whole Secret
            yield {**node["secretRef"], "key": None}
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
        assert set(svc.get("networks", [])) <= set(compose["networks"]), name
        if name != "docker-api":  # the socket proxy lives on its internal network alone
            assert "vlmforge" in svc["networks"], name
        if name not in ("secrets-check", "minio-buckets"):  # (minio-buckets waits for minio)
            assert "secrets-check" in svc["depends_on"], f"{name} starts before the secrets check"
    assert compose["networks"]["vlmforge"]["name"] == "vlmforge"


def test_compose_publishes_on_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_urls_point_at_defined_services_and_ports(compose, service_ports):
    databases = _databases()
    seen = set()
    start_mlflow = _module("start_mlflow")  # the MLflow image's entry point builds its URIs
    uris = [start_mlflow.database_uri("mlflow"), *start_mlflow.server_argv(),
            start_mlflow.auth_config({"MLFLOW_ADMIN_PASSWORD": "x"})]
    for name, svc in [*compose["services"].items(), ("mlflow (start_mlflow.py)", {"uris": uris})]:
        for text in _strings(svc):
            for host, port, path in URL.findall(text.replace("$$", "$")):
                if host == "127.0.0.1":
                    continue
                assert host in compose["services"], f"{name}: {host} is no service"
                assert int(port) in {**service_ports, **COMPOSE_ONLY_PORTS}[host], f"{name}: {host}:{port}"
                if host == "postgres":
                    assert path in databases, f"{name}: database {path!r} not created"
                seen.add(f"{host}:{port}")
    assert {"postgres:5432", "minio:9000", "prefect-server:4200"} <= seen
    prefect_db = compose["services"]["prefect-server"]["environment"]  # the database by parts
    assert prefect_db["PREFECT_SERVER_DATABASE_HOST"] == "postgres"
    assert int(prefect_db["PREFECT_SERVER_DATABASE_PORT"]) in service_ports["postgres"]
    assert prefect_db["PREFECT_SERVER_DATABASE_NAME"] in databases
    published = {str(p).split(":")[-1] for s in compose["services"].values() for p in s.get("ports", [])}
    assert {"5000", "4200", "9000"} <= published


def test_compose_buckets_and_variables(compose):
    services = compose["services"]
    created = set(re.findall(r"store/(\w+)", services["minio-buckets"]["entrypoint"]))
    mlflow_cmd = " ".join(_module("start_mlflow").server_argv())
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
            assert ref["name"] == "vlmforge-secrets", ref
            assert ref["key"] is None or ref["key"] in secret["stringData"], ref
            checked += ref["key"] is not None
        sa = d.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName")
        assert sa is None or sa in accounts
    assert checked >= 10
    flows = yaml.safe_load((INFRA / "prefect" / "kubernetes.yaml").read_text())["definitions"]["work_pool"]
    assert flows["job_variables"]["service_account_name"] in accounts
    assert flows["job_variables"]["namespace"] == "vlmforge"
    host, port, _ = URL.findall(flows["job_variables"]["env"]["MLFLOW_TRACKING_URI"])[0]
    assert int(port) in service_ports[host.removesuffix(".vlmforge.svc.cluster.local")]
    assert any("vlmforge-k8s" in s for d in docs for s in _strings(d))


# ---- NetworkPolicies: default deny, then exactly the flows the stack needs ------------------

FLOW_RUN = {"batch.kubernetes.io/job-name": "prefect-job-1"}  # a flow-run Job's pod
EXPECTED_FLOWS = {
    ("mlflow", "postgres", 5432), ("prefect-server", "postgres", 5432),
    ("mlflow", "minio", 9000), ("minio-buckets", "minio", 9000), ("flow-run", "minio", 9000),
    ("flow-run", "mlflow", 5000), ("flow-run", "prefect-server", 4200),
    ("prefect-worker", "prefect-server", 4200),
}


def _matches(selector: dict, labels: dict) -> bool:
    if selector.get("matchLabels", {}).items() - labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value, values = e["key"] in labels, labels.get(e["key"]), e.get("values", [])
        ok = {"Exists": present, "DoesNotExist": not present, "In": present and value in values,
              "NotIn": not present or value not in values}[e["operator"]]
        if not ok:
            return False
    return True


def _pods(k8s) -> dict[str, dict]:
    """Every kind of pod of the stack, by name, with its labels."""
    pods = {}
    for docs in k8s.values():
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet", "Job"):
                labels = dict(d["spec"]["template"]["metadata"]["labels"])
                if d["kind"] == "Job":
                    labels["batch.kubernetes.io/job-name"] = d["metadata"]["name"]
                pods[labels["app"]] = labels
    return {**pods, "flow-run": FLOW_RUN}


def _policies(k8s) -> list[dict]:
    return [d for docs in k8s.values() for d in docs if d["kind"] == "NetworkPolicy"]


def _allowed(policies, pod: dict, direction: str, peer: dict, port: int) -> bool:
    """Whether some policy selecting ``pod`` allows ``peer`` on ``port`` in ``direction``."""
    key, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for pol in policies:
        spec = pol["spec"]
        if direction not in spec["policyTypes"] or not _matches(spec["podSelector"], pod):
            continue
        for rule in spec.get(key, []):
            peers = rule.get(side, [])
            if any("podSelector" in p and "namespaceSelector" not in p
                   and _matches(p["podSelector"], peer) for p in peers) and \
                    any(r["port"] == port and r.get("protocol", "TCP") == "TCP" for r in rule["ports"]):
                return True
    return False


def test_k8s_network_policies_deny_by_default(k8s):
    policies = _policies(k8s)
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny policy for the namespace"
    dns = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"].get("egress")]
    assert len(dns) == 1 and {r["port"] for r in dns[0]["spec"]["egress"][0]["ports"]} == {53}
    assert dns[0]["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_k8s_network_policies_allow_exactly_the_needed_flows(k8s, service_ports):
    policies, pods = _policies(k8s), _pods(k8s)
    assert set(pods) == {"postgres", "minio", "minio-buckets", "mlflow", "prefect-server",
                         "prefect-worker", "flow-run"}
    ports = {name: ps for name, ps in service_ports.items() if name in pods}
    allowed = {(src, dst, port) for src in pods for dst, dst_ports in ports.items()
               for port in dst_ports if src != dst
               and _allowed(policies, pods[dst], "Ingress", pods[src], port)
               and _allowed(policies, pods[src], "Egress", pods[dst], port)}
    assert allowed == EXPECTED_FLOWS
    # one-sided rules would be dead letters: every ingress rule has its egress twin and back
    for src in pods:
        for dst, dst_ports in ports.items():
            for port in dst_ports:
                ingress = _allowed(policies, pods[dst], "Ingress", pods[src], port)
                egress = _allowed(policies, pods[src], "Egress", pods[dst], port)
                assert ingress == egress, (src, dst, port, ingress, egress)


def test_k8s_network_policies_cover_the_urls_the_pods_use(k8s):
    """Each service URL in a workload (and in the flow runs' job variables) is an allowed flow."""
    policies, pods = _policies(k8s), _pods(k8s)
    for docs in k8s.values():
        for d in docs:
            if d["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            src = d["spec"]["template"]["metadata"]["labels"]["app"]
            for text in _strings(d["spec"]["template"]["spec"].get("containers", [])):
                for host, port, _ in URL.findall(text):
                    dst = host.removesuffix(".vlmforge.svc.cluster.local")
                    if host != "127.0.0.1":
                        assert (src, dst, int(port)) in EXPECTED_FLOWS, (src, dst, port)
    flows = yaml.safe_load((INFRA / "prefect" / "kubernetes.yaml").read_text())
    env = flows["definitions"]["work_pool"]["job_variables"]["env"]
    for host, port, _ in URL.findall(" ".join(env.values())):
        assert ("flow-run", host.removesuffix(".vlmforge.svc.cluster.local"), int(port)) in EXPECTED_FLOWS
    worker_api = [p for p in policies if p["metadata"]["name"] == "prefect-worker"][0]
    blocks = [r for r in worker_api["spec"]["egress"] if any("ipBlock" in t for t in r["to"])]
    assert {p["port"] for r in blocks for p in r["ports"]} == {443, 6443}  # the Kubernetes API
    assert _matches(policies[0]["spec"]["podSelector"], pods["flow-run"])
