"""Champion/challenger promotion gate over registered model versions, one that knows its noise.

Scores live on each version as tags ``metric.<name>``; each suite's per-item scores as the
artifact ``<suite>/items.json`` of the suite's evaluation run, named by the version's tag
``eval_items`` (default suite) or ``eval_items.<suite>``. :func:`decide` is pure: point scores
and paired intervals in, a decision out. :func:`promote` checks that both versions were scored
on the same data (``eval_key`` tags, the items' data version), pairs their items by key,
computes the paired bootstrap interval of every difference, decides, and moves the alias by
compare-and-swap (:func:`registry.models.move_alias`).

Every alias move is recorded on both versions: ``promotion.*`` on the new holder (previous
holder, reason, time, metric diff, forced, the gate used), ``demotion.*`` on the previous one,
and an ``alias_history`` (JSON list, newest last) on each.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from components.evaluation.intervals import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Interval,
    ItemTable,
    paired_differences,
)
from components.evaluation.suites import DEFAULT_SUITE

from .models import AliasRaceError, get_alias, move_alias, set_version_tags, version_info
from .tracking import client, log_dict

if TYPE_CHECKING:
    from components.recipe import Evaluation

METRIC_PREFIX = "metric."
HISTORY_TAG = "alias_history"
HISTORY_LIMIT = 50  # events kept per version
# per suite: the default suite's tag, or "<tag>.<suite>"
EVAL_KEY, EVAL_ITEMS, EVAL_DATA, EVAL_INTERVALS = (
    "eval_key", "eval_items", "eval_data_version", "eval_intervals")


def suite_tag(tag: str, suite: str) -> str:
    """The version tag ``tag`` of ``suite`` (the default suite's is unsuffixed)."""
    return tag if suite == DEFAULT_SUITE else f"{tag}.{suite}"


@dataclass(frozen=True)
class GateConfig:
    """Promotion rule.

    The candidate is promoted only if the 95 % interval of its paired gain over the champion
    on ``primary`` lies above ``min_delta``, and no guarded metric ``m`` drops by more than
    ``guarded[m]`` beyond its own interval (the whole interval of the drop past the
    tolerance). ``lower_is_better`` names metrics (or name suffixes after ``_``) where lower
    is better; every other metric is higher-is-better. Intervals: paired bootstrap over
    items, ``resamples`` draws seeded with ``seed``.
    """

    primary: str
    min_delta: float = 0.0
    guarded: Mapping[str, float] = field(default_factory=dict)
    lower_is_better: tuple[str, ...] = ()
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED

    def __post_init__(self) -> None:
        object.__setattr__(self, "guarded", dict(self.guarded))
        object.__setattr__(self, "lower_is_better", tuple(self.lower_is_better))
        if not self.primary:
            raise ValueError("the gate needs a primary metric")
        if not isinstance(self.min_delta, int | float) or not math.isfinite(self.min_delta):
            raise ValueError(f"min_delta must be a finite number, got {self.min_delta!r}")
        for m, tol in self.guarded.items():
            if not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
                raise ValueError(f"guard {m}: tolerance must be a finite number >= 0, got {tol!r}")
        if not 0 < self.confidence < 1 or self.resamples < 1:
            raise ValueError("confidence must lie in (0, 1) and resamples be >= 1")

    def lower(self, metric: str) -> bool:
        """Whether lower is better for ``metric``."""
        return any(metric == s or metric.endswith(f"_{s}") for s in self.lower_is_better)

    def sign(self, metric: str) -> float:
        return -1.0 if self.lower(metric) else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "guarded": dict(self.guarded),
                "lower_is_better": list(self.lower_is_better)}

    def describe(self) -> str:
        """One line: the primary rule and the guards."""
        arrow = lambda m: "lower is better" if self.lower(m) else "higher is better"  # noqa: E731
        guards = ", ".join(f"{m} (tolerance {t:g}, {arrow(m)})"
                           for m, t in sorted(self.guarded.items()))
        return (f"{self.primary} gain > {self.min_delta:g} ({arrow(self.primary)}) at "
                f"{self.confidence:.0%}, paired bootstrap ({self.resamples} resamples, seed "
                f"{self.seed}); guarded: {guards or 'none'}")


SUITE_PRIMARY = {"synthetic": "vqa_accuracy", "pope": "mean_f1", "vqa": "accuracy",
                 "caption": "CIDEr", "mcq": "accuracy"}  # each suite kind's headline score


def gate_from_recipe(evaluate: Evaluation) -> GateConfig:
    """The recipe's gate: its primary metric and min_delta, its guards, and each declared suite's
    primary score guarded at ``guard_suites`` (a POPE file suite's is ``f1``)."""
    guarded = dict(evaluate.guarded)
    if evaluate.guard_suites is not None:
        suites = {DEFAULT_SUITE: {"kind": "synthetic"}, **evaluate.suites}
        for name, spec in suites.items():
            kind = spec.get("kind", "")
            score = "f1" if kind == "pope" and spec.get("questions") else SUITE_PRIMARY.get(kind)
            metric = score if name == DEFAULT_SUITE else f"{name}_{score}"
            if score and metric != evaluate.primary_metric:
                guarded.setdefault(metric, evaluate.guard_suites)
    return GateConfig(evaluate.primary_metric, evaluate.min_delta, guarded,
                      tuple(evaluate.lower_is_better), evaluate.confidence, evaluate.resamples,
                      evaluate.interval_seed)


def loosenings(gate: GateConfig, baseline: GateConfig) -> list[str]:
    """How ``gate`` is looser than ``baseline``: another primary metric, a lower min_delta, a
    guard dropped or widened, a metric's direction flipped, a lower confidence, another seed."""
    out = []
    if gate.primary != baseline.primary:
        out.append(f"primary metric {baseline.primary} -> {gate.primary}")
    if gate.min_delta < baseline.min_delta:
        out.append(f"min_delta {baseline.min_delta:g} -> {gate.min_delta:g}")
    for m, tol in sorted(baseline.guarded.items()):
        if m not in gate.guarded:
            out.append(f"guard {m} dropped")
        elif gate.guarded[m] > tol:
            out.append(f"guard {m} tolerance {tol:g} -> {gate.guarded[m]:g}")
    for m in sorted({baseline.primary, *baseline.guarded}):
        if gate.lower(m) != baseline.lower(m):
            out.append(f"{m}: {'lower' if gate.lower(m) else 'higher'} is better")
    if gate.confidence < baseline.confidence:
        out.append(f"confidence {baseline.confidence:g} -> {gate.confidence:g}")
    if gate.seed != baseline.seed:
        out.append(f"bootstrap seed {baseline.seed} -> {gate.seed}")
    return out


class Row(NamedTuple):
    """One metric of the comparison; ``low``/``high``: interval of the paired difference."""

    metric: str
    champion: float | None
    candidate: float | None
    delta: float | None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None  # McNemar's exact p, for a share of right answers


@dataclass(frozen=True)
class Decision:
    """Outcome of a gate: whether to promote, why, and the per-metric comparison."""

    promote: bool
    reason: str
    rows: list[Row] = field(default_factory=list)
    previous: str | None = None  # version that held the alias (set by promote())
    forced: bool = False
    verdicts: dict[str, str] = field(default_factory=dict)  # metric -> pass/FAIL/ok/new/...
    lost_race: bool = False  # passed, but another promotion moved the alias first


def _rows(candidate: Mapping[str, float], champion: Mapping[str, float] | None, primary: str,
          paired: Mapping[str, Interval]) -> list[Row]:
    champion = champion or {}
    rows = []
    for m in sorted(set(candidate) | set(champion), key=lambda m: (m != primary, m)):
        old, new, d = champion.get(m), candidate.get(m), paired.get(m)
        delta = None if old is None or new is None else new - old
        rows.append(Row(m, old, new, delta, *((d.low, d.high, d.p_value) if d else ())))
    return rows


def _not_finite(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                compared: Sequence[str]) -> str | None:
    for m, v in sorted(candidate.items()):
        if not math.isfinite(v):
            return f"candidate metric {m} is not finite ({v!r}): a broken evaluation is never promoted"
    for m in compared:
        v = (champion or {}).get(m)
        if v is not None and not math.isfinite(v):
            return f"champion metric {m} is not finite ({v!r}): re-score the champion"
    return None


def _ci(lo: float, hi: float) -> str:
    return f"95% CI {lo:+.4f} .. {hi:+.4f}"


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
           gate: GateConfig, paired: Mapping[str, Interval] | None = None) -> Decision:
    """Gate ``candidate`` metrics against ``champion`` metrics (None: no champion). ``paired``:
    interval of ``candidate - champion`` per metric over the same items; the primary metric
    needs one, a guarded metric without one is compared point-wise."""
    paired = paired or {}
    rows = _rows(candidate, champion, gate.primary, paired)
    verdicts = {r.metric: "-" for r in rows}
    compared = [gate.primary, *sorted(m for m in gate.guarded if m != gate.primary)]
    refusal = _not_finite(candidate, champion, compared)
    if refusal:
        return Decision(False, refusal, rows, verdicts=verdicts)
    p = gate.primary
    if p not in candidate:
        verdicts[p] = "missing"
        return Decision(False, f"candidate has no '{p}' metric", rows, verdicts=verdicts)
    if champion is None:
        verdicts.update({m: "new" for m in compared if m in candidate})
        return Decision(True, "no champion yet", rows, verdicts=verdicts)
    if p not in champion:
        verdicts[p] = "FAIL"
        return Decision(False, f"champion has no '{p}' metric: score it on the candidate's "
                        "suites and data first", rows, verdicts=verdicts)
    failures = [_primary_verdict(candidate, champion, gate, paired.get(p), verdicts)]
    for m in compared[1:]:
        failures.append(_guard_verdict(m, candidate, champion, gate, paired.get(m), verdicts))
    failed = [f for f in failures[1:] if f] if not failures[0] else [failures[0]]
    if failed:
        return Decision(False, failed[0], rows, verdicts=verdicts)
    gain, d = gate.sign(p) * (candidate[p] - champion[p]), paired[p]
    lo, hi = sorted((gate.sign(p) * d.low, gate.sign(p) * d.high))
    return Decision(True, f"{p} gain {gain:+.4f} ({_ci(lo, hi)}) is above min_delta "
                    f"{gate.min_delta:g}", rows, verdicts=verdicts)


def _primary_verdict(candidate: Mapping[str, float], champion: Mapping[str, float],
                     gate: GateConfig, d: Interval | None, verdicts: dict[str, str]) -> str | None:
    """None when the primary's gain clears min_delta beyond its interval, else why not."""
    p, s = gate.primary, gate.sign(gate.primary)
    gain = s * (candidate[p] - champion[p])
    if d is None:
        verdicts[p] = "FAIL"
        return (f"{p}: no paired per-item scores of both versions on the same items, so its "
                "noise is unknown: evaluate both on the same data (`vlmforge evaluate`)")
    lo, hi = sorted((s * d.low, s * d.high))
    if lo > gate.min_delta:
        verdicts[p] = "pass"
        return None
    verdicts[p] = "FAIL"
    where = "inside the noise" if hi > gate.min_delta else "the whole interval lies at or below it"
    return f"{p} gain {gain:+.4f} ({_ci(lo, hi)}) is not above min_delta {gate.min_delta:g}: {where}"


def _guard_verdict(m: str, candidate: Mapping[str, float], champion: Mapping[str, float],
                   gate: GateConfig, d: Interval | None, verdicts: dict[str, str]) -> str | None:
    """None unless guarded ``m`` drops past its tolerance by more than its interval."""
    if m not in champion:
        verdicts[m] = "new"
        return None
    if m not in candidate:
        verdicts[m] = "missing"
        return f"candidate has no guarded metric '{m}'"
    tol, s = gate.guarded[m], gate.sign(m)
    drop = s * (champion[m] - candidate[m])
    if d is None:  # no per-item scores: the point drop decides
        bad, how = drop > tol, "no per-item scores, point comparison"
    else:
        lo, hi = sorted((-s * d.low, -s * d.high))
        bad, how = lo > tol, _ci(lo, hi)
    verdicts[m] = "FAIL" if bad else "ok"
    return f"guarded metric {m} worsened by {drop:.4f} ({how}), beyond its tolerance {tol:g}" \
        if bad else None


# ---------------------------------------------------------------------- recorded scores


def record_metrics(name: str, version: str, metrics: Mapping[str, float]) -> None:
    """Store evaluation metrics on a version as tags ``metric.<name>``; refuses non-finite ones."""
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


def record_items(name: str, version: str, table: ItemTable, *, run_id: str,
                 intervals: Mapping[str, Interval] | None = None) -> None:
    """Log a suite's per-item scores as ``<suite>/items.json`` of run ``run_id`` and point the
    version at them (``eval_items[.suite]``), with the data version they were scored on and
    the intervals of its scores (``eval_intervals[.suite]``, metric -> [low, high])."""
    path = f"{table.suite}/items.json"
    log_dict(table.to_json(), path, run_id=run_id)
    tags = {suite_tag(EVAL_ITEMS, table.suite): f"runs:/{run_id}/{path}",
            suite_tag(EVAL_INTERVALS, table.suite): json.dumps(
                {m: [round(i.low, 6), round(i.high, 6)] for m, i in sorted((intervals or {}).items())})}
    if table.data_version:
        tags[suite_tag(EVAL_DATA, table.suite)] = table.data_version
    set_version_tags(name, version, tags)


def read_items(name: str, version: str, suite: str = DEFAULT_SUITE,
               tags: Mapping[str, str] | None = None) -> ItemTable | None:
    """The per-item scores of ``suite`` recorded on a version, or None."""
    tags = version_info(name, version)["tags"] if tags is None else tags
    uri = tags.get(suite_tag(EVAL_ITEMS, suite), "")
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    if not uri.startswith("runs:/") or not path:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client().download_artifacts(run_id, path, tmp)
        return ItemTable.from_json(json.loads(Path(local).read_text()))


def read_intervals(name: str, version: str, suite: str = DEFAULT_SUITE,
                   tags: Mapping[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """The recorded interval of each score of ``suite`` on a version (empty if none)."""
    tags = version_info(name, version)["tags"] if tags is None else tags
    try:
        raw = json.loads(tags.get(suite_tag(EVAL_INTERVALS, suite), "{}"))
    except ValueError:
        return {}
    return {m: (float(v[0]), float(v[1])) for m, v in raw.items()}


def _suites(tags: Mapping[str, str]) -> set[str]:
    """Suites scored on a version (its ``eval_key[.suite]`` and ``eval_items[.suite]`` tags)."""
    out = set()
    for k in tags:
        for base in (EVAL_KEY, EVAL_ITEMS):
            if k == base:
                out.add(DEFAULT_SUITE)
            elif k.startswith(f"{base}."):
                out.add(k.removeprefix(f"{base}."))
    return out


def suite_of(metric: str, suites: Sequence[str] | set[str]) -> str:
    """The suite a recorded metric comes from: the longest suite name prefixing it, else the
    default suite (whose metrics are unprefixed)."""
    named = [s for s in suites if s != DEFAULT_SUITE and metric.startswith(f"{s}_")]
    return max(named, key=len) if named else DEFAULT_SUITE


class DataMismatch(ValueError):
    """The two versions' compared scores come from different data or evaluation settings."""


def _same_data(name: str, version: str, previous: str, suite: str,
               new: Mapping[str, str], old: Mapping[str, str]) -> None:
    k_new, k_old = new.get(suite_tag(EVAL_KEY, suite)), old.get(suite_tag(EVAL_KEY, suite))
    d_new, d_old = new.get(suite_tag(EVAL_DATA, suite)), old.get(suite_tag(EVAL_DATA, suite))
    if (k_new and k_old and k_new != k_old) or (d_new and d_old and d_new != d_old):
        raise DataMismatch(
            f"v{version} and champion v{previous} were scored on different data or evaluation "
            f"settings: suite {suite!r} of v{version} on data {d_new or 'unknown'} (eval_key "
            f"{k_new or 'none'}), of v{previous} on data {d_old or 'unknown'} (eval_key "
            f"{k_old or 'none'}); score v{previous} on v{version}'s data (`vlmforge evaluate "
            f"--model models:/{name}/{previous}`; the evaluate stage does it itself) or "
            "promote with --force --reason")


def paired_scores(name: str, version: str, previous: str, gate: GateConfig,
                  candidate: Mapping[str, float]) -> dict[str, Interval]:
    """Paired intervals of ``version - previous`` for every metric whose suite both versions
    have per-item scores for. Raises :class:`DataMismatch` when a suite holding a compared
    metric was scored on other data, other settings or other items."""
    new, old = version_info(name, version)["tags"], version_info(name, previous)["tags"]
    suites = _suites(new) | _suites(old)
    compared = {suite_of(m, suites) for m in [gate.primary, *gate.guarded] if m in candidate}
    for suite in sorted(compared):
        _same_data(name, version, previous, suite, new, old)
    out: dict[str, Interval] = {}
    for suite in sorted(_suites(new) & _suites(old)):
        t_new, t_old = read_items(name, version, suite, new), read_items(name, previous, suite, old)
        if t_new is None or t_old is None:
            continue
        try:
            if t_new.data_version and t_old.data_version and t_new.data_version != t_old.data_version:
                raise DataMismatch(f"suite {suite!r}: items of data {t_new.data_version} and "
                                   f"{t_old.data_version}")
            out.update(paired_differences(t_new, t_old, confidence=gate.confidence,
                                          resamples=gate.resamples, seed=gate.seed))
        except ValueError as exc:
            if suite in compared:
                raise DataMismatch(f"v{version} against champion v{previous}: {exc}") from None
    return out


# ------------------------------------------------------------------------------ promotion


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
    loosened: Sequence[str] = (),
) -> Decision:
    """Gate ``version`` against the holder of ``alias`` and move the alias if it passes.

    ``metrics`` (if given) are recorded on the version first. A version without any recorded
    evaluation metrics is refused with ``ValueError``, ``force`` or not; an unknown version
    raises ``LookupError``. ``force`` skips the gate but needs a ``reason``; so does a gate
    ``loosened`` from the recipe's (the ways it is looser, recorded). ``dry_run`` decides
    without changing anything. The alias moves by compare-and-swap: when another promotion
    moved it since it was read, the decision says so (``lost_race``) and nothing is recorded.
    On promotion the version gets tags ``promotion.previous``/``reason``/``time``/``diff``/
    ``alias``/``forced``/``gate`` (JSON: the gate, forced, reason, loosened), the previous holder
    ``demotion.alias``/``replaced_by``/``reason``/``time``, and both an ``alias_history`` event.
    """
    version = str(version)
    if force and not (reason and reason.strip()):
        raise ValueError("force=True requires a reason")
    if loosened and not force:
        raise ValueError(f"the gate is looser than the recipe's ({'; '.join(loosened)}): that "
                         "needs force and a reason")
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
    try:
        paired = paired_scores(name, version, previous, gate, candidate) if previous else {}
        d = decide(candidate, champion, gate, paired)
    except DataMismatch as exc:
        d = decide(candidate, champion, gate, {})
        d = Decision(False, str(exc), d.rows, verdicts=d.verdicts)
    if force:
        d = Decision(True, f"forced: {reason}", d.rows, previous, forced=True, verdicts=d.verdicts)
    else:
        text = f"{d.reason}; {reason}" if reason else d.reason
        d = Decision(d.promote, text, d.rows, previous, verdicts=d.verdicts)
    if not d.promote or dry_run:
        return d
    try:
        move_alias(name, alias, version, expected=previous)
    except AliasRaceError as exc:
        return Decision(False, f"lost a race: {exc}", d.rows, previous, force, d.verdicts,
                        lost_race=True)
    _record_move(name, version, previous, alias, d, info["tags"],
                 {**gate.as_dict(), "forced": force, "reason": reason, "loosened": list(loosened)})
    return d


def _record_move(name: str, version: str, previous: str | None, alias: str, d: Decision,
                 tags: Mapping[str, str], gate: dict[str, Any]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    event = {"time": now, "alias": alias, "reason": d.reason, "forced": d.forced}
    set_version_tags(name, version, {
        "promotion.previous": previous or "none",
        "promotion.reason": d.reason,
        "promotion.time": now,
        "promotion.diff": json.dumps({r.metric: r.delta for r in d.rows}),
        "promotion.alias": alias,
        "promotion.forced": str(d.forced).lower(),
        "promotion.gate": json.dumps(gate),
        HISTORY_TAG: _history(tags, {**event, "event": "promoted", "previous": previous}),
    })
    if previous is not None:
        old_tags = version_info(name, previous)["tags"]
        set_version_tags(name, previous, {
            "demotion.alias": alias,
            "demotion.replaced_by": version,
            "demotion.reason": d.reason,
            "demotion.time": now,
            HISTORY_TAG: _history(old_tags, {**event, "event": "replaced", "by": version}),
        })


# ---------------------------------------------------------------------------------- table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def comparison_table(decision: Decision, candidate_version: str | None = None,
                     confidence: float = CONFIDENCE) -> str:
    """The gate's comparison as text: metric, champion, candidate, delta, the interval of the
    paired delta, McNemar's p (shares of right answers), verdict."""
    champ = f"champion v{decision.previous}" if decision.previous else "champion"
    cand = f"candidate v{candidate_version}" if candidate_version else "candidate"
    header = ("metric", champ, cand, "delta", f"{confidence:.0%} CI of delta", "McNemar p",
              "verdict")
    body = [(r.metric, _fmt(r.champion), _fmt(r.candidate),
             "-" if r.delta is None else f"{r.delta:+.4f}",
             "-" if r.low is None else f"[{r.low:+.4f}, {r.high:+.4f}]",
             "-" if r.p_value is None else f"{r.p_value:.3g}",
             decision.verdicts.get(r.metric, "-")) for r in decision.rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])
