"""Lineage both ways, read from the registry's own tags.

From a registered version: the data version and the datasets' content hashes it trained on,
the recipe, git commit, stage and its chain of parent versions down to the backbones, and
every score recorded on it grouped by the suite that produced it (with the suite's MLflow
run and any interval and judge fields recorded beside the score). From a data or dataset
hash: every registered version trained on it and the scores they got.
"""

from __future__ import annotations

from typing import Any

from registry.models import list_versions, version_info
from registry.promotion import read_metrics
from registry.tracking import client

DEFAULT_SUITE = "synthetic"  # the held-out suite, recorded unprefixed
_INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


def parse_model_uri(uri: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` (or ``NAME/VERSION``) -> (name, version)."""
    body = uri.removeprefix("models:/")
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{uri!r}: expected models:/<name>/<version>")
    return name, version


def _scores(tags: dict[str, str], metrics: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Recorded metrics grouped by suite: the prefixed ones by their suite's name (from the
    ``eval_key.<suite>`` tags), the rest by the default suite."""
    suites = sorted((k.removeprefix("eval_key."), v) for k, v in tags.items() if k.startswith("eval_key."))
    out: dict[str, dict[str, Any]] = {}
    for metric, value in sorted(metrics.items()):
        suite = next((s for s, _ in suites if metric.startswith(f"{s}_")), DEFAULT_SUITE)
        entry = out.setdefault(suite, {"run_id": tags.get(f"eval_run_id.{suite}" if suite != DEFAULT_SUITE
                                                          else "eval_run_id"), "metrics": {}})
        entry["metrics"][metric] = value
    return out


def version_lineage(name: str, version: str) -> dict[str, Any]:
    """Where a version came from and what it scored."""
    info = version_info(name, version)
    tags = info["tags"]
    chain, parent = [], tags.get("parent_version")
    while parent and parent.isdigit():
        pinfo = version_info(name, parent)
        chain.append({"version": parent, "stage": pinfo["tags"].get("stage"), "run_id": pinfo["run_id"]})
        parent = pinfo["tags"].get("parent_version")
    backbones = (dict(item.split("=", 1) for item in parent.removeprefix("backbones:").split(",") if "=" in item)
                 if parent and parent.startswith("backbones:") else {})
    return {
        "model": f"models:/{name}/{version}",
        "stage": tags.get("stage"), "run_id": info["run_id"], "recipe": tags.get("recipe"),
        "git_sha": tags.get("git_sha"), "data_version": tags.get("data_version"),
        "datasets": {k.removeprefix("dataset."): v for k, v in tags.items() if k.startswith("dataset.")},
        "parents": chain, "backbones": backbones,
        "gate": {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")},
        "scores": _scores(tags, read_metrics(name, version)),
    }


def data_lineage(digest: str) -> list[dict[str, Any]]:
    """Every registered version trained on data version or dataset hash ``digest`` (a prefix of
    at least 8 characters matches), with its scores."""
    if len(digest) < 8:
        raise ValueError(f"{digest!r}: give at least 8 characters of the hash")
    found = []
    for model in client().search_registered_models():
        for v in list_versions(model.name):
            tags = v["tags"]
            hits = [k for k, value in tags.items() if (k == "data_version" or k.startswith("dataset."))
                    and value.startswith(digest)]
            if hits:
                found.append({"model": f"models:/{model.name}/{v['version']}", "stage": tags.get("stage"),
                              "matched": sorted(hits), "data_version": tags.get("data_version"),
                              "scores": _scores(tags, read_metrics(model.name, str(v["version"])))})
    return found


def render_version(lineage: dict[str, Any]) -> str:
    """The lineage of one version as the terminal shows it."""
    lines = [f"{lineage['model']}  stage {lineage['stage']}  run {lineage['run_id']}",
             f"  recipe {lineage['recipe']}  git {lineage['git_sha']}",
             f"  data version {lineage['data_version']}"]
    lines += [f"  dataset {name}: {digest}" for name, digest in sorted(lineage["datasets"].items())]
    lines += [f"  parent v{p['version']} ({p['stage']}, run {p['run_id']})" for p in lineage["parents"]]
    lines += [f"  backbone {name} v{v}" for name, v in sorted(lineage["backbones"].items())]
    lines += [f"  gate {k} = {v}" for k, v in sorted(lineage["gate"].items())]
    for suite, entry in lineage["scores"].items():
        lines.append(f"  scores of suite {suite} (run {entry['run_id']}):")
        metrics = entry["metrics"]
        for metric in sorted(m for m in metrics if not m.endswith(_INTERVAL_SUFFIXES)):
            ci = [metrics.get(f"{metric}{s}") for s in _INTERVAL_SUFFIXES]
            interval = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if None not in ci else ""
            lines.append(f"    {metric:<40}{metrics[metric]:.4f}{interval}")
    return "\n".join(lines)
