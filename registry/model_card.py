"""Model cards: a markdown page per registered version, kept as the version's description
in the MLflow registry and as the artifact ``model_card.md`` of the run that made it.

:func:`model_card` renders plain values; :func:`publish_model_card` gathers them from the
registry (version tags, its run's params and metrics, recorded scores, the parent chain
down to the backbones) and attaches the card. MLflow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .models import version_info
from .promotion import read_metrics
from .tracking import client, get_run

CARD_ARTIFACT = "model_card.md"
MAX_DESCRIPTION = 5000  # the SQL registry's column size for a version description
TRAINING_METRICS = ("loss_first", "loss_last", "train_seconds", "dropped_too_long")
BACKBONES_PREFIX = "backbones:"
MAX_LINEAGE_HOPS = 64


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def model_card(
    name: str,
    version: str,
    *,
    stage: str | None = None,
    kind: str | None = None,
    recipe: str | None = None,
    architecture: str | None = None,
    backbones: Mapping[str, str] | None = None,
    data_version: str | None = None,
    parent_version: str | None = None,
    trainable_params: int | None = None,
    total_params: int | None = None,
    trainable_groups: Mapping[str, int] | None = None,
    metrics: Mapping[str, float] | None = None,
    scores: Mapping[str, float] | None = None,
    aliases: list[str] | None = None,
    run_id: str | None = None,
    git_sha: str | None = None,
) -> str:
    """The card of ``name`` version ``version`` as markdown; unknown facts are left out."""
    title = f"# {name} v{version}"
    if stage:
        title += f" — after stage `{stage}`" + (f" ({kind})" if kind and kind != stage else "")
    facts: list[tuple[str, str]] = [("model URI", f"`models:/{name}/{version}`")]
    if aliases:
        facts.append(("aliases", ", ".join(f"`{a}`" for a in aliases)))
    if recipe:
        facts.append(("recipe", f"`{recipe}`"))
    if architecture:
        facts.append(("architecture", architecture))
    for role, spec in (backbones or {}).items():
        facts.append((f"{role} backbone", spec))
    if parent_version:
        parent = parent_version
        if not parent.startswith(BACKBONES_PREFIX):
            parent = f"`models:/{name}/{parent}`"
        facts.append(("parent version", parent))
    if data_version:
        facts.append(("data version", f"`{data_version}`"))
    if trainable_params is not None:
        text = f"{trainable_params:,}"
        if total_params:
            text += f" of {total_params:,}"
        if trainable_groups:
            text += " (" + ", ".join(f"{g} {n:,}" for g, n in sorted(trainable_groups.items())) + ")"
        facts.append(("trainable parameters", text))
    if run_id:
        facts.append(("MLflow run", f"`{run_id}`"))
    if git_sha:
        facts.append(("code", f"`{git_sha}`"))
    lines = [title, "", *_table(facts, (" ", " ")), ""]
    metrics = dict(metrics or {})
    if metrics:
        lines += ["## Metrics after training", "",
                  *_table([(k, _number(v)) for k, v in sorted(metrics.items())], ("metric", "value")),
                  ""]
    lines += ["## Evaluation scores", ""]
    if scores:
        lines += _table([(k, f"{v:.3f}") for k, v in sorted(scores.items())], ("metric", "score"))
    else:
        lines.append("_not evaluated yet_")
    lines += ["", "## Use", "", "```python",
              "from transformers import AutoModelForImageTextToText, AutoProcessor",
              "import registry  # vlmforge",
              "registry.configure(\".vlmforge\")  # the store holding the version ($VLMFORGE_HOME)",
              f"path = registry.hf_model_dir({name!r}, {str(version)!r})",
              "model = AutoModelForImageTextToText.from_pretrained(path)",
              "processor = AutoProcessor.from_pretrained(path)", "```", "",
              f"or `mlflow models serve -m models:/{name}/{version} --env-manager local`.", ""]
    return "\n".join(lines)


def _card_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """What a stage reports about itself: training summary and held-out accuracies."""
    picked = {k: v for k, v in metrics.items() if k in TRAINING_METRICS or k.startswith("heldout_")}
    return picked or dict(metrics)


def _int(value: Any) -> int | None:
    return int(value) if str(value).isdigit() else None


def backbone_lineage(name: str, version: str) -> str | None:
    """The ``backbones:<name>=<v>,...`` tag at the root of ``version``'s parent chain."""
    seen: set[str] = set()
    current: str | None = str(version)
    while current and current not in seen and len(seen) < MAX_LINEAGE_HOPS:
        seen.add(current)
        parent = version_info(name, current)["tags"].get("parent_version")
        if parent is None or parent.startswith(BACKBONES_PREFIX):
            return parent
        current = parent
    return None


def card_for_version(name: str, version: str, *, architecture: str | None = None,
                     backbones: Mapping[str, str] | None = None, **facts: Any) -> str:
    """:func:`model_card` from what the registry knows about the version; ``facts`` win.

    Aliases move between versions, so the card leaves them out unless given in ``facts``."""
    info = version_info(name, version)
    tags = info["tags"]
    run = get_run(info["run_id"]) if info["run_id"] else {"params": {}, "metrics": {}}
    params = run["params"]
    groups = {k.removeprefix("trainable_"): int(v) for k, v in params.items()
              if k.startswith("trainable_") and k != "trainable_params" and _int(v) is not None}
    roots = backbone_lineage(name, version)
    resolved = dict(backbones or {})
    if roots:
        pinned = dict(p.split("=", 1) for p in roots.removeprefix(BACKBONES_PREFIX).split(",") if "=" in p)
        for role, spec in resolved.items():
            model = spec.removeprefix("registered:").split(" ", 1)[0]
            if spec.startswith("registered:") and model in pinned:
                resolved[role] = f"{spec} → `models:/{model}/{pinned[model]}`"
    values: dict[str, Any] = dict(
        stage=tags.get("stage"), kind=tags.get("kind"), recipe=tags.get("recipe"),
        architecture=architecture, backbones=resolved or None,
        data_version=tags.get("data_version"), parent_version=tags.get("parent_version"),
        trainable_params=_int(params.get("trainable_params")),
        total_params=_int(params.get("total_params")),
        trainable_groups=groups or None, metrics=_card_metrics(run["metrics"]),
        scores=read_metrics(name, version) or None, run_id=info["run_id"], git_sha=tags.get("git_sha"))
    values.update(facts)
    return model_card(name, str(version), **values)


def attach_model_card(name: str, version: str, card: str, run_id: str | None = None) -> None:
    """The card as the version's description and as ``model_card.md`` of ``run_id`` (by
    default the version's run). A description longer than the registry holds is cut,
    pointing at the artifact."""
    c = client()
    run_id = run_id or c.get_model_version(name, str(version)).run_id
    description = card
    if len(description) > MAX_DESCRIPTION:
        note = f"\n\n… (cut; the whole card is the run's artifact `{CARD_ARTIFACT}`)\n"
        description = description[: MAX_DESCRIPTION - len(note)] + note
    c.update_model_version(name, str(version), description=description)
    if run_id:
        c.log_text(run_id, card, CARD_ARTIFACT)


def publish_model_card(name: str, version: str, *, architecture: str | None = None,
                       backbones: Mapping[str, str] | None = None, **facts: Any) -> str:
    """Render the version's card from the registry and attach it; returns the card."""
    card = card_for_version(name, version, architecture=architecture, backbones=backbones, **facts)
    attach_model_card(name, version, card)
    return card
