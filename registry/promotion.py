"""Champion/challenger promotion gate over registered model versions.

Evaluation metrics live on each version as tags ``metric.<name>``; :func:`decide`
is pure, :func:`promote` reads the tags, decides and moves the alias. Every alias move is
recorded in tags on both versions: ``promotion.*`` on the new holder (previous holder,
reason, time, metric diff, forced), ``demotion.*`` on the previous one, and an
``alias_history`` (JSON list, newest last) on each.
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
HISTORY_TAG = "alias_history"
HISTORY_LIMIT = 50  # events kept per version

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
    verdicts: dict[str, str] = field(default_factory=dict)  # metric -> pass/FAIL/ok/new/...


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


def _verdicts(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, gate: GateConfig
) -> dict[str, str]:
    """Per-metric verdict: the primary ``pass``/``FAIL`` (min_delta), a guarded metric
    ``ok``/``FAIL`` (tolerance), ``missing`` where the candidate lacks a compared metric,
    ``new`` where there is nothing to compare with; other metrics are informative (``-``)."""
    sign = 1.0 if gate.higher_is_better else -1.0
    champion = champion or {}
    out: dict[str, str] = {}
    for m in sorted(set(candidate) | set(champion)):
        compared = m == gate.primary or m in gate.guarded
        if not compared:
            out[m] = "-"
        elif m not in candidate:
            out[m] = "missing"
        elif m not in champion:
            out[m] = "new"
        elif m == gate.primary:
            gain = sign * (candidate[m] - champion[m])
            out[m] = "pass" if gain >= gate.min_delta - _EPS else "FAIL"
        else:
            drop = sign * (champion[m] - candidate[m])
            out[m] = "ok" if drop <= gate.guarded[m] + _EPS else "FAIL"
    return out


def decide(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, gate: GateConfig
) -> Decision:
    """Pure gate decision for ``candidate`` metrics against ``champion`` metrics (None: none)."""
    d = _decide(candidate, champion, gate)
    return Decision(d.promote, d.reason, d.rows, verdicts=_verdicts(candidate, champion, gate))


def _decide(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, gate: GateConfig
) -> Decision:
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


def _check_version(name: str, version: str) -> dict:
    from mlflow.exceptions import MlflowException

    try:
        return version_info(name, version)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LookupError(f"model {name!r} has no version {version}") from None
        raise


def _history(tags: Mapping[str, str], event: dict) -> str:
    try:
        events = json.loads(tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        events = []
    if not isinstance(events, list):
        events = []
    return json.dumps((events + [event])[-HISTORY_LIMIT:])


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

    ``metrics`` (if given) are recorded on the version first. A version without any recorded
    evaluation metrics is refused with ``ValueError``, ``force`` or not; an unknown version
    raises ``LookupError``. On promotion the version gets tags
    ``promotion.previous``/``reason``/``time``/``diff``/``alias``/``forced``, the previous
    holder ``demotion.alias``/``replaced_by``/``reason``/``time``, and both an
    ``alias_history`` event. ``force`` skips the gate but needs a ``reason``; ``dry_run``
    decides without changing anything.
    """
    version = str(version)
    if force and not (reason and reason.strip()):
        raise ValueError("force=True requires a reason")
    info = _check_version(name, version)
    if metrics and not dry_run:
        record_metrics(name, version, metrics)
    candidate = {**read_metrics(name, version), **(metrics or {})}
    if not candidate:
        raise ValueError(
            f"{name} v{version} has no recorded metrics: evaluate it first (`vlmforge evaluate "
            f"--model models:/{name}/{version}`); a version without metrics cannot be promoted, "
            "not even with force"
        )
    previous = get_alias(name, alias)
    if previous == version:
        return Decision(False, f"v{version} already holds '{alias}'", [], previous)
    champion = read_metrics(name, previous) if previous else None
    d = decide(candidate, champion, gate)
    if force:
        d = Decision(True, f"forced: {reason}", d.rows, previous, forced=True, verdicts=d.verdicts)
    else:
        text = f"{d.reason}; {reason}" if reason else d.reason
        d = Decision(d.promote, text, d.rows, previous, verdicts=d.verdicts)
    if d.promote and not dry_run:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        set_alias(name, alias, version)
        event = {"time": now, "alias": alias, "reason": d.reason, "forced": force}
        set_version_tags(
            name,
            version,
            {
                "promotion.previous": previous or "none",
                "promotion.reason": d.reason,
                "promotion.time": now,
                "promotion.diff": json.dumps({m: delta for m, _, _, delta in d.rows}),
                "promotion.alias": alias,
                "promotion.forced": str(force).lower(),
                HISTORY_TAG: _history(info["tags"], {**event, "event": "promoted",
                                                     "previous": previous}),
            },
        )
        if previous is not None:
            old_tags = version_info(name, previous)["tags"]
            set_version_tags(
                name,
                previous,
                {
                    "demotion.alias": alias,
                    "demotion.replaced_by": version,
                    "demotion.reason": d.reason,
                    "demotion.time": now,
                    HISTORY_TAG: _history(old_tags, {**event, "event": "replaced",
                                                     "by": version}),
                },
            )
    return d


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def comparison_table(decision: Decision, candidate_version: str | None = None) -> str:
    """The gate's comparison as text: metric, champion, candidate, delta, verdict."""
    champ = f"champion v{decision.previous}" if decision.previous else "champion"
    cand = f"candidate v{candidate_version}" if candidate_version else "candidate"
    header = ("metric", champ, cand, "delta", "verdict")
    body = [(m, _fmt(old), _fmt(new), "-" if delta is None else f"{delta:+.4f}",
             decision.verdicts.get(m, "-")) for m, old, new, delta in decision.rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])
