"""Champion/challenger promotion gate over registered model versions.

Evaluation metrics live on each version as tags ``metric.<name>``; :func:`decide`
is pure, :func:`promote` reads the tags, decides and moves the alias.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .models import get_alias, set_alias, set_version_tags, version_info

METRIC_PREFIX = "metric."
_EPS = 1e-12  # float slack when comparing deltas against thresholds

Row = tuple[str, float | None, float | None, float | None]  # metric, champion, candidate, delta


@dataclass(frozen=True)
class GateConfig:
    """Promotion rule.

    The candidate must beat the champion on ``primary`` by at least ``min_delta`` (ties
    pass when it is 0) and may lose at most ``guarded[m]`` on each guarded metric ``m``.
    ``higher_is_better`` orients the primary and the guarded metrics alike.
    """

    primary: str
    min_delta: float = 0.0
    guarded: dict[str, float] = field(default_factory=dict)
    higher_is_better: bool = True


@dataclass(frozen=True)
class Decision:
    """Outcome of a gate: whether to promote, why, and the per-metric comparison."""

    promote: bool
    reason: str
    rows: list[Row] = field(default_factory=list)
    previous: str | None = None  # version that held the alias (set by promote())
    forced: bool = False


def _rows(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, primary: str
) -> list[Row]:
    champion = champion or {}
    names = sorted(set(candidate) | set(champion), key=lambda m: (m != primary, m))
    rows: list[Row] = []
    for m in names:
        old, new = champion.get(m), candidate.get(m)
        rows.append((m, old, new, None if old is None or new is None else new - old))
    return rows


def decide(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, gate: GateConfig
) -> Decision:
    """Pure gate decision for ``candidate`` metrics against ``champion`` metrics (None: none)."""
    rows = _rows(candidate, champion, gate.primary)
    sign = 1.0 if gate.higher_is_better else -1.0
    if gate.primary not in candidate:
        return Decision(False, f"candidate has no '{gate.primary}' metric", rows)
    if champion is None:
        return Decision(True, "no champion yet", rows)
    if gate.primary not in champion:
        return Decision(True, f"champion has no '{gate.primary}' metric", rows)
    gain = sign * (candidate[gate.primary] - champion[gate.primary])
    if gain < gate.min_delta - _EPS:
        return Decision(
            False,
            f"{gate.primary} improvement {gain:+.4g} is below min_delta {gate.min_delta:g}",
            rows,
        )
    for m, max_drop in sorted(gate.guarded.items()):
        if m not in champion:
            continue
        if m not in candidate:
            return Decision(False, f"candidate has no guarded metric '{m}'", rows)
        drop = sign * (champion[m] - candidate[m])
        if drop > max_drop + _EPS:
            return Decision(
                False, f"guarded metric {m} dropped by {drop:.4g} (max {max_drop:g})", rows
            )
    return Decision(True, f"{gate.primary} improved by {gain:+.4g}", rows)


def record_metrics(name: str, version: str, metrics: Mapping[str, float]) -> None:
    """Store evaluation metrics on a version as tags ``metric.<name>``."""
    tags = {}
    for k, v in metrics.items():
        value = float(v)
        if not math.isfinite(value):
            raise ValueError(f"metric {k!r} of {name} v{version} is not finite: {v!r}")
        tags[f"{METRIC_PREFIX}{k}"] = repr(value)
    set_version_tags(name, version, tags)


def read_metrics(name: str, version: str) -> dict[str, float]:
    """Metrics recorded on a version by :func:`record_metrics`."""
    tags = version_info(name, version)["tags"]
    return {
        k.removeprefix(METRIC_PREFIX): float(v)
        for k, v in tags.items()
        if k.startswith(METRIC_PREFIX)
    }


def promote(
    name: str,
    version: str,
    metrics: Mapping[str, float] | None,
    gate: GateConfig,
    *,
    alias: str = "champion",
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
) -> Decision:
    """Gate ``version`` against the holder of ``alias`` and move the alias if it passes.

    ``metrics`` (if given) are recorded on the version first. On promotion the version gets
    tags ``promotion.previous``/``reason``/``time``/``diff``. ``force`` skips the gate but
    needs a ``reason``; ``dry_run`` decides without changing anything.
    """
    version = str(version)
    if force and not (reason and reason.strip()):
        raise ValueError("force=True requires a reason")
    if metrics and not dry_run:
        record_metrics(name, version, metrics)
    candidate = {**read_metrics(name, version), **(metrics or {})}
    if not candidate:
        raise ValueError(
            f"{name} v{version} has no recorded metrics: evaluate it and call record_metrics"
        )
    previous = get_alias(name, alias)
    if previous == version:
        return Decision(False, f"v{version} already holds '{alias}'", [], previous)
    champion = read_metrics(name, previous) if previous else None
    d = decide(candidate, champion, gate)
    if force:
        d = Decision(True, f"forced: {reason}", d.rows, previous, forced=True)
    else:
        text = f"{d.reason}; {reason}" if reason else d.reason
        d = Decision(d.promote, text, d.rows, previous)
    if d.promote and not dry_run:
        set_alias(name, alias, version)
        set_version_tags(
            name,
            version,
            {
                "promotion.previous": previous or "none",
                "promotion.reason": d.reason,
                "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
                "promotion.diff": json.dumps({m: delta for m, _, _, delta in d.rows}),
                "promotion.alias": alias,
                "promotion.forced": str(force).lower(),
            },
        )
    return d
