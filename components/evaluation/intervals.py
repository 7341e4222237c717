"""Confidence intervals for benchmark scores, and the per-item tables they resample.

A score on a few hundred items moves by a few points between two equally good models, so the
promotion gate compares two versions on the same items (paired) and promotes only a difference
whose interval clears the threshold. Pure numpy; per-caption CIDEr reads pycocoevalcap.

Statistics (seeded, percentile intervals):

* :func:`bootstrap_mean_ci`: bootstrap of a mean over items;
* :func:`paired_bootstrap_diff_ci`: bootstrap of ``mean(a - b)``, items resampled in pairs;
* :func:`mcnemar_exact`: the exact two-sided test of paired binary outcomes (the discordant
  pairs are Binomial(n, 1/2) when both versions are equally good);
* :class:`ItemTable`: per-item columns and, per metric, a formula over the columns' sums
  (a ratio of sums, F1, a mean of metrics). Resampling items and recomputing the formula
  gives an interval for metrics that are not means of per-item scores (pooled hallucination
  rate, CHAIR_i, F1, precision) as well as for accuracies.

Builders of the tables: :func:`synthetic_table` (the held-out synthetic suite, from its
records and rows) and :func:`benchmark_table` (POPE, official VQA / MCQ accuracy, caption
CIDEr, from a suite's rows). A formula is kept only when it reproduces the recorded score,
so an interval never describes a different number than the one printed beside it.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
FORMAT = "vlmforge-items/1"
_CELLS_PER_CHUNK = 4_000_000  # resample counts held in memory at once (resamples x items)
_TOLERANCE = 1e-9  # a formula must reproduce its recorded score this closely (relative)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; for a paired difference, ``p_value`` is the exact
    McNemar p when the metric is a share of right answers on the same items."""

    estimate: float
    low: float
    high: float
    p_value: float | None = None

    def as_list(self) -> list[float]:
        return [self.low, self.high]


# ---------------------------------------------------------------------------- statistics


def _check_level(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples!r}")


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """How often each of ``n`` items is drawn in each bootstrap resample, in chunks of rows
    (resample x item); every statistic of one table uses the same draws."""
    if n < 1:
        raise ValueError("no items to resample")
    rng = np.random.default_rng(seed)
    rows = max(1, min(resamples, _CELLS_PER_CHUNK // n))
    done = 0
    while done < resamples:
        b = min(rows, resamples - done)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        done += b


def percentile_interval(samples: np.ndarray, estimate: float,
                        confidence: float = CONFIDENCE) -> Interval:
    """The percentile interval of bootstrap ``samples`` (empirical quantiles, no interpolation,
    so a discrete statistic gets values it can take)."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha], method="inverted_cdf")
    return Interval(float(estimate), float(low), float(high))


def _finite_vector(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty list of numbers")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: not finite at item {int(np.flatnonzero(~np.isfinite(array))[0])}")
    return array


def bootstrap_mean_ci(values: Sequence[float], *, confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of the mean of per-item ``values``."""
    _check_level(confidence, resamples)
    x = _finite_vector(values, "values")
    means = np.concatenate([counts @ x / x.size for counts in resample_counts(x.size, resamples, seed)])
    return percentile_interval(means, float(x.mean()), confidence)


def paired_bootstrap_diff_ci(candidate: Sequence[float], champion: Sequence[float], *,
                             confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                             seed: int = SEED) -> Interval:
    """Interval of ``mean(candidate) - mean(champion)`` over the same items, resampled in
    pairs: what the two share (easy and hard items) cancels, so it is narrower than two
    separate intervals."""
    a, b = _finite_vector(candidate, "candidate"), _finite_vector(champion, "champion")
    if a.size != b.size:
        raise ValueError(f"paired scores need the same items: {a.size} against {b.size}")
    return bootstrap_mean_ci(a - b, confidence=confidence, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs (``better``: candidate right, champion wrong; ``worse``: the reverse)
    and the exact two-sided p-value of 'equally good'."""

    better: int
    worse: int
    p_value: float


def _binary(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{what}: McNemar's test needs outcomes of 0 or 1")
    return array.astype(bool)


def mcnemar_exact(candidate: Sequence[float], champion: Sequence[float]) -> McNemar:
    """Exact McNemar test of paired right/wrong outcomes: with ``n`` discordant pairs,
    ``p = min(1, 2 * P(X <= min(better, worse)))`` for ``X ~ Binomial(n, 1/2)``."""
    a, b = _binary(candidate, "candidate"), _binary(champion, "champion")
    if a.size != b.size:
        raise ValueError(f"paired outcomes need the same items: {a.size} against {b.size}")
    better, worse = int((a & ~b).sum()), int((~a & b).sum())
    n = better + worse
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1))
    return McNemar(better, worse, min(1.0, 2 * tail / 2**n) if n else 1.0)


# ------------------------------------------------------------------------- item tables


def ratio(num: str, den: str, scale: float = 1.0, tolerance: float = 0.0) -> dict[str, Any]:
    """Formula ``scale * sum(num) / sum(den)`` (0 when ``sum(den)`` is 0): a mean over the items
    where ``den`` is 1, a pooled rate, a share of mentions. ``tolerance``: how far a recorded
    score may differ (an official score rounded to 2 decimals)."""
    out: dict[str, Any] = {"kind": "ratio", "num": num, "den": den}
    if scale != 1.0:
        out["scale"] = scale
    if tolerance:
        out["tolerance"] = tolerance
    return out


def f1(tp: str, fp: str, fn: str) -> dict[str, Any]:
    """Formula ``2 TP / (2 TP + FP + FN)`` (0 when nothing is positive)."""
    return {"kind": "f1", "tp": tp, "fp": fp, "fn": fn}


def mean_of(*metrics: str) -> dict[str, Any]:
    """Formula: the mean of other metrics of the same table."""
    return {"kind": "mean_of", "of": list(metrics)}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _evaluate(name: str, formulas: Mapping[str, Mapping], sums: Mapping[str, np.ndarray],
              depth: int = 0) -> np.ndarray:
    f = formulas[name]
    kind = f["kind"]
    if kind == "ratio":
        return f.get("scale", 1.0) * _safe_div(sums[f["num"]], sums[f["den"]])
    if kind == "f1":
        tp, fp, fn = sums[f["tp"]], sums[f["fp"]], sums[f["fn"]]
        return _safe_div(2 * tp, 2 * tp + fp + fn)
    if kind == "mean_of" and depth < 4:
        return np.mean([_evaluate(m, formulas, sums, depth + 1) for m in f["of"]], axis=0)
    raise ValueError(f"metric {name!r}: unknown formula {dict(f)!r}")


def _columns_of(name: str, formulas: Mapping[str, Mapping], depth: int = 0) -> set[str]:
    f = formulas[name]
    if f["kind"] == "mean_of":
        return set().union(*(_columns_of(m, formulas, depth + 1) for m in f["of"])) if depth < 4 else set()
    return {v for k, v in f.items() if k in ("num", "den", "tp", "fp", "fn")}


@dataclass
class ItemTable:
    """One suite's items on one version: each item's key and score, numeric columns per item
    and a formula per metric (metric names as recorded on the version)."""

    suite: str
    keys: list[str]
    scores: list[float | None]
    columns: dict[str, np.ndarray]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_version: str | None = None

    def __post_init__(self) -> None:
        if len(set(self.keys)) != len(self.keys):
            dup = next(k for k, c in Counter(self.keys).items() if c > 1)
            raise ValueError(f"suite {self.suite!r}: item key {dup!r} is not unique")
        self.columns = {k: np.asarray(v, dtype=float) for k, v in self.columns.items()}
        for name, col in self.columns.items():
            if col.shape != (len(self.keys),) or not np.isfinite(col).all():
                raise ValueError(f"suite {self.suite!r}: column {name!r} needs one finite value "
                                 "per item")
        for name in self.metrics:
            missing = _columns_of(name, self.metrics) - set(self.columns)
            if missing:
                raise ValueError(f"suite {self.suite!r}: metric {name!r} reads unknown "
                                 f"columns {sorted(missing)}")

    def value(self, metric: str) -> float:
        """The metric on all items."""
        sums = {k: np.asarray(v.sum()) for k, v in self.columns.items()}
        return float(_evaluate(metric, self.metrics, sums))

    def verified(self, recorded: Mapping[str, float]) -> ItemTable:
        """The table with only the formulas that reproduce a recorded score."""
        keep = {}
        for name, formula in self.metrics.items():
            if name in recorded:
                tol = max(_TOLERANCE * max(1.0, abs(recorded[name])), formula.get("tolerance", 0.0))
                if abs(self.value(name) - recorded[name]) <= tol:
                    keep[name] = formula
        used = set().union(*(_columns_of(m, keep) for m in keep)) if keep else set()
        return ItemTable(self.suite, self.keys, self.scores,
                         {k: v for k, v in self.columns.items() if k in used}, keep,
                         self.data_version)

    def intervals(self, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                  seed: int = SEED) -> dict[str, Interval]:
        """A bootstrap interval per metric: items resampled, each formula recomputed."""
        _check_level(confidence, resamples)
        if not self.metrics or not self.keys:
            return {}
        names = sorted(self.columns)
        matrix = np.stack([self.columns[c] for c in names], axis=1)
        samples: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for counts in resample_counts(len(self.keys), resamples, seed):
            sums = dict(zip(names, (counts @ matrix).T, strict=True))
            for m in self.metrics:
                samples[m].append(_evaluate(m, self.metrics, sums))
        return {m: percentile_interval(np.concatenate(s), self.value(m), confidence)
                for m, s in samples.items()}

    def to_json(self) -> dict[str, Any]:
        """``items``: key, score and the item's non-zero columns; ``metrics``: the formulas."""
        items = []
        for i, key in enumerate(self.keys):
            values = {c: _plain(v[i]) for c, v in self.columns.items() if v[i] != 0}
            items.append({"key": key, "score": self.scores[i], "values": values})
        return {"format": FORMAT, "suite": self.suite, "data_version": self.data_version,
                "metrics": self.metrics, "items": items}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemTable:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a per-item score file of format {FORMAT!r}")
        items = data["items"]
        names = sorted({c for it in items for c in it["values"]})
        columns = {c: np.array([it["values"].get(c, 0.0) for it in items], dtype=float)
                   for c in names}
        for m in data["metrics"]:  # a column zero on every item is not in the file
            for name in _columns_of(m, data["metrics"]):
                columns.setdefault(name, np.zeros(len(items)))
        return cls(data["suite"], [str(it["key"]) for it in items],
                   [it.get("score") for it in items], columns, dict(data["metrics"]),
                   data.get("data_version"))


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def paired_differences(candidate: ItemTable, champion: ItemTable, *,
                       confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = SEED) -> dict[str, Interval]:
    """Interval of ``candidate - champion`` for every metric both tables define alike, items
    paired by key and resampled together. McNemar's exact p is added where the metric is a
    share of right answers over the same items. Raises ``ValueError`` unless both hold the
    same items."""
    _check_level(confidence, resamples)
    if set(candidate.keys) != set(champion.keys):
        only_new = sorted(set(candidate.keys) - set(champion.keys))
        only_old = sorted(set(champion.keys) - set(candidate.keys))
        raise ValueError(f"suite {candidate.suite!r} was scored on different items: "
                         f"{len(only_new)} only on the candidate (e.g. {only_new[:2]}), "
                         f"{len(only_old)} only on the champion (e.g. {only_old[:2]})")
    order = {k: i for i, k in enumerate(champion.keys)}
    perm = np.array([order[k] for k in candidate.keys], dtype=int)
    shared = [m for m in candidate.metrics if champion.metrics.get(m) == candidate.metrics[m]]
    if not shared or not candidate.keys:
        return {}
    formulas = {m: candidate.metrics[m] for m in shared}
    cols = sorted(set().union(*(_columns_of(m, candidate.metrics) for m in shared)))
    zeros = np.zeros(len(candidate.keys))
    new = np.stack([candidate.columns.get(c, zeros) for c in cols], axis=1)
    old = np.stack([champion.columns[c][perm] if c in champion.columns else zeros
                    for c in cols], axis=1)
    full_new = dict(zip(cols, new.sum(axis=0), strict=True))
    full_old = dict(zip(cols, old.sum(axis=0), strict=True))
    samples: dict[str, list[np.ndarray]] = {m: [] for m in shared}
    for counts in resample_counts(len(candidate.keys), resamples, seed):
        s_new = dict(zip(cols, (counts @ new).T, strict=True))
        s_old = dict(zip(cols, (counts @ old).T, strict=True))
        for m in shared:
            samples[m].append(_evaluate(m, candidate.metrics, s_new)
                              - _evaluate(m, candidate.metrics, s_old))
    out = {}
    for m in shared:
        estimate = float(_evaluate(m, formulas, full_new) - _evaluate(m, formulas, full_old))
        interval = percentile_interval(np.concatenate(samples[m]), estimate, confidence)
        p = _mcnemar_p(formulas[m], dict(zip(cols, new.T, strict=True)),
                       dict(zip(cols, old.T, strict=True)))
        out[m] = Interval(interval.estimate, interval.low, interval.high, p)
    return out


def _mcnemar_p(formula: Mapping, new: Mapping[str, np.ndarray],
               old: Mapping[str, np.ndarray]) -> float | None:
    """McNemar's p for a ratio whose denominator marks the same items on both versions and
    whose numerator is 0/1 on them (an accuracy); None otherwise."""
    if formula["kind"] != "ratio":
        return None
    den_new, den_old = new[formula["den"]], old[formula["den"]]
    if not np.array_equal(den_new, den_old) or not np.isin(den_new, (0.0, 1.0)).all():
        return None
    on = den_new == 1
    a, b = new[formula["num"]][on], old[formula["num"]][on]
    if not on.any() or not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        return None
    return mcnemar_exact(a, b).p_value


# ------------------------------------------------------------------ the suites' tables


class _Builder:
    """Columns filled item by item (absent = 0) and the formulas over them."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.scores: list[float | None] = []
        self.cells: list[dict[str, float]] = []
        self.metrics: dict[str, dict[str, Any]] = {}

    def add(self, key: str, score: float | None, values: Mapping[str, float]) -> None:
        self.keys.append(key)
        self.scores.append(None if score is None else float(score))
        self.cells.append({k: float(v) for k, v in values.items() if v})

    def table(self, suite: str, data_version: str | None) -> ItemTable:
        names = sorted({c for cell in self.cells for c in cell}
                       | set().union(*(_columns_of(m, self.metrics) for m in self.metrics)))
        columns = {c: np.array([cell.get(c, 0.0) for cell in self.cells]) for c in names}
        return ItemTable(suite, unique_keys(self.keys), self.scores, columns, self.metrics,
                         data_version)


def unique_keys(keys: Sequence[str]) -> list[str]:
    """Keys made unique by their occurrence (``k``, ``k#2``, ...): rows of one sample (POPE
    probes) pair up in order, as both versions are asked the same questions in the same order."""
    seen: Counter[str] = Counter()
    out = []
    for k in keys:
        seen[k] += 1
        out.append(k if seen[k] == 1 else f"{k}#{seen[k]}")
    return out


def caption_cider_per_item(predictions: Sequence[str],
                           references: Sequence[Sequence[str]]) -> list[float]:
    """Per-caption CIDEr-D, the document frequencies taken from all references (as the corpus
    score does: that score is the mean of these), tokenized as ``caption_scores`` does."""
    from pycocoevalcap.cider.cider import Cider

    from components.evaluation.caption_metrics import simple_tokenize

    ids = list(range(len(predictions)))
    if shutil.which("java") is not None:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        res = tok.tokenize({i: [{"caption": predictions[i]}] for i in ids})
        gts = tok.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    else:
        res = {i: [simple_tokenize(predictions[i])] for i in ids}
        gts = {i: [simple_tokenize(c) for c in references[i]] for i in ids}
    _, scores = Cider().compute_score({i: gts[i] for i in res}, res)
    return [float(s) for s in scores]


def _yes_no_formulas(b: _Builder, group: str, name: str) -> None:
    """Accuracy, precision, recall, F1, yes ratio and hallucination rate of yes/no probes
    (``yes_no.yes_no_metrics``) from per-probe columns ``<group>:...``."""
    c = lambda s: f"{group}:{s}"  # noqa: E731
    b.metrics.update({
        f"{name}accuracy": ratio(c("right"), c("n")),
        f"{name}precision": ratio(c("tp"), c("yes")),
        f"{name}recall": ratio(c("tp"), c("pos")),
        f"{name}f1": f1(c("tp"), c("fp"), c("fn")),
        f"{name}yes_ratio": ratio(c("yes"), c("n")),
        f"{name}hallucination_rate": ratio(c("fp"), c("neg")),
    })


def _yes_no_values(group: str, said_yes: bool, present: bool) -> dict[str, float]:
    c = lambda s: f"{group}:{s}"  # noqa: E731
    return {c("n"): 1, c("yes"): said_yes, c("pos"): present, c("neg"): not present,
            c("tp"): said_yes and present, c("fp"): said_yes and not present,
            c("fn"): not said_yes and present, c("right"): said_yes == present}


def synthetic_table(suite: str, records: Sequence[Mapping], rows: Sequence[Mapping],
                    recorded: Mapping[str, float], *, prefix: str = "",
                    data_version: str | None = None) -> ItemTable:
    """Per-item table of the synthetic suite (``synthetic_suite.score_predictions``): accuracy
    per group and overall VQA (means of exact match), the existence yes/no metrics, caption
    CIDEr (per-caption CIDEr-D), CHAIR_s / CHAIR_i / object recall and the pooled
    hallucination rate; ``rows[i]`` answers ``records[i]``. Verified against ``recorded``."""
    from components.evaluation.caption_hallucination import hallucinated_mentions, mentioned_objects
    from components.evaluation.synthetic_suite import generalisation_groups
    from components.evaluation.yes_no import is_yes

    if len(records) != len(rows):
        raise ValueError(f"{len(records)} records but {len(rows)} rows")
    b = _Builder()
    captions: list[int] = []
    for i, (rec, row) in enumerate(zip(records, rows, strict=True)):
        task, qtype, pred = rec["task"], rec.get("qtype", ""), row["prediction"]
        score = float(row["score"])
        v: dict[str, float] = {}
        if task == "caption":
            v["cap"] = 1
            captions.append(i)
            if "objects" in rec:
                objs = rec["objects"]
                mentions, bad = mentioned_objects(pred), hallucinated_mentions(pred, objs)
                v.update({"cap_obj": 1, "cap_bad": bool(bad), "cap_mentions": len(mentions),
                          "cap_bad_mentions": len(bad), "cap_objects": len(objs),
                          "cap_named": len({(o["colour"], o["shape"]) for o in objs}
                                           & set(mentions)),
                          "probe": 1, "probe_bad": bool(bad)})
        else:
            group = f"vqa_{qtype or rec['source']}" if task == "vqa" else task
            groups = [group] + (["vqa"] if task == "vqa" else [])
            groups += [f"text_{rec['kind']}"] if task == "text" and "kind" in rec else []
            groups += generalisation_groups(rec)
            for g in groups:
                v[f"n:{g}"], v[f"c:{g}"] = 1, score
                b.metrics[f"{prefix}{g}_accuracy"] = ratio(f"c:{g}", f"n:{g}")
        if qtype == "existence":
            said_yes, present = is_yes(pred), not rec["absent"]
            v.update(_yes_no_values("existence", said_yes, present))
            if not present:
                v.update({"probe": 1, "probe_bad": said_yes})
        b.add(str(row.get("key", rec.get("key", i))), score, v)
    if any("existence:n" in cell for cell in b.cells):
        _yes_no_formulas(b, "existence", f"{prefix}existence_")
    if captions:
        ciders = caption_cider_per_item([rows[i]["prediction"] for i in captions],
                                        [list(records[i]["answers"]) for i in captions])
        for i, value in zip(captions, ciders, strict=True):
            b.cells[i]["cider"] = value
        b.metrics[f"{prefix}caption_cider"] = ratio("cider", "cap")
    b.metrics.update({f"{prefix}caption_hallucination_rate": ratio("cap_bad", "cap_obj"),
                      f"{prefix}caption_chair_i": ratio("cap_bad_mentions", "cap_mentions"),
                      f"{prefix}caption_object_recall": ratio("cap_named", "cap_objects"),
                      f"{prefix}hallucination_rate": ratio("probe_bad", "probe")})
    return b.table(suite, data_version).verified(recorded)


def benchmark_table(suite: str, kind: str, rows: Sequence[Mapping],
                    recorded: Mapping[str, float], *, prefix: str = "",
                    data_version: str | None = None) -> ItemTable:
    """Per-item table of a non-synthetic suite from its rows: POPE (the yes/no metrics per
    sampler and their means), official VQA and MCQ accuracy (percent: 100 x the mean of the
    per-question scores; VQA's official rounding to 2 decimals tolerated), caption CIDEr.
    Other metrics (BLEU, ROUGE-L, judge scores, per answer type) get no table formula.
    Verified against ``recorded``."""
    from components.evaluation.yes_no import is_yes

    b = _Builder()
    if kind == "pope":
        samplers: list[str] = []
        for row in rows:
            sampler = str(row.get("sampler", ""))
            present = bool(row["present"]) if "present" in row else row["answers"][0] == "yes"
            group = f"pope_{sampler}" if sampler else "pope"
            if sampler and sampler not in samplers:
                samplers.append(sampler)
            key = "|".join(str(p) for p in (row["key"], sampler, row.get("object", "")) if p)
            b.add(key, row.get("score"), _yes_no_values(group, is_yes(row["prediction"]), present))
        for sampler in samplers or [""]:
            _yes_no_formulas(b, f"pope_{sampler}" if sampler else "pope",
                             f"{prefix}{sampler}_" if sampler else prefix)
        if samplers:
            b.metrics[f"{prefix}mean_f1"] = mean_of(*(f"{prefix}{s}_f1" for s in samplers))
            b.metrics[f"{prefix}mean_accuracy"] = mean_of(*(f"{prefix}{s}_accuracy"
                                                            for s in samplers))
    elif kind in ("vqa", "mcq"):
        for row in rows:
            b.add(str(row["key"]), row["score"], {"n": 1, "score": float(row["score"])})
        b.metrics[f"{prefix}accuracy"] = ratio("score", "n", 100.0,
                                               0.011 if kind == "vqa" else 0.0)
    elif kind == "caption":
        ciders = caption_cider_per_item([r["prediction"] for r in rows],
                                        [list(r["answers"]) for r in rows]) if rows else []
        for row, value in zip(rows, ciders, strict=True):
            b.add(str(row["key"]), row.get("score"), {"n": 1, "cider": value})
        b.metrics[f"{prefix}CIDEr"] = ratio("cider", "n")
    else:
        raise ValueError(f"no per-item table for suite kind {kind!r}")
    return b.table(suite, data_version).verified(recorded)
