"""Ablation studies: a base recipe, arms as overrides of it, seeds, and the published claim.

A study file (configs/ablations/<name>.yaml) names the base recipe, the arms (each a set of
overrides merged into the base recipe's YAML), the metrics to report, and the claim it
tests: the `treatment` arm scores `direction` (higher or lower) than the `baseline` arm on
the `primary` metric, as the cited source reports. Each arm runs once per seed (the recipe
seed and the data seed together); the table gives every arm's mean and 95 % interval over
seeds, and the claim is *reproduced* when the 95 % interval of the seed-paired difference
(treatment - baseline) excludes zero in the claimed direction.

Overrides merge into the recipe dict key by key; under ``stages`` they are keyed by stage
name (a mapping merges into that stage, ``null`` drops it). Arms of one seed share the
recipe and registered-model names, so a stage whose section, parent and data are the same
in two arms is trained once (the stage cache keys do not depend on names).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

STUDY_NAME = r"^[a-z][a-z0-9_-]*$"


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STUDY_NAME)
    source: str  # the publication and the figure the claim comes from
    claim: str  # what the source reports, in words
    base: str  # the base recipe (relative: to the study file's folder, then the project root)
    primary: str  # the metric of the claim
    metrics: list[str] = Field(default_factory=list)  # also reported
    baseline: str
    treatment: str
    direction: Literal["higher", "lower"]
    common: dict[str, Any] = Field(default_factory=dict)  # overrides every arm shares
    arms: dict[str, dict[str, Any]]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])

    @model_validator(mode="after")
    def _arms(self) -> Study:
        for arm in (self.baseline, self.treatment):
            if arm not in self.arms:
                raise ValueError(f"study {self.name!r}: arm {arm!r} is not among {list(self.arms)}")
        if not self.seeds:
            raise ValueError(f"study {self.name!r}: at least one seed")
        return self


def load_study(path: str | Path) -> Study:
    return Study.model_validate(yaml.safe_load(Path(path).read_text()))


def merge(base: Any, overrides: Any) -> Any:
    """``overrides`` merged into ``base`` (dicts key by key; ``stages`` by stage name)."""
    if not isinstance(base, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key == "stages" and isinstance(value, dict) and isinstance(out.get("stages"), list):
            out["stages"] = _merge_stages(out["stages"], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def _merge_stages(stages: list[dict], overrides: dict[str, Any]) -> list[dict]:
    names = [s["name"] for s in stages]
    unknown = [n for n in overrides if n not in names and overrides[n] is None]
    if unknown:
        raise ValueError(f"overrides drop unknown stages {unknown}; stages: {names}")
    out = [merge(s, overrides.get(s["name"], {})) for s in stages
           if overrides.get(s["name"], {}) is not None]
    out += [{"name": n, **v} for n, v in overrides.items() if n not in names and v is not None]
    return out


def arm_recipe(study: Study, base: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """The recipe dict of one arm and seed: the base with the common and arm overrides, the
    seed as recipe and data seed, and names shared by the arms of that seed."""
    raw = merge(merge(base, study.common), study.arms[arm])
    suffix = f"abl-{study.name}-s{seed}"
    raw["name"] = suffix
    raw["registered_model"] = f"vlm-{suffix}"
    raw["seed"] = seed
    raw.setdefault("data", {})["seed"] = seed
    model = raw.setdefault("model", {})
    for role in ("vision", "text"):
        spec = (raw.get("backbones") or {}).get(role)
        if spec is not None:
            old = spec.get("registered_model", f"{'vision' if role == 'vision' else 'lm'}-tiny")
            spec["registered_model"] = f"{old}-{suffix}"
            if model.get(role) == f"registered:{old}":
                model[role] = f"registered:{old}-{suffix}"
    return raw


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t_975(df: int) -> float:
    """Student's t quantile 0.975 (two-sided 95 %) for ``df`` degrees of freedom."""
    if df < 1:
        return math.inf
    known = max(k for k in T_975 if k <= df)
    return T_975[known] if df <= 30 else 1.96


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95 % t-interval (infinite with one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(study: Study, scores: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """The study's table and whether the claim is reproduced.

    ``scores``: arm -> seed -> metric -> value (seeds missing a metric are left out of it)."""
    table = {}
    for arm, by_seed in scores.items():
        table[arm] = {}
        for metric in [study.primary, *study.metrics]:
            values = [m[metric] for m in by_seed.values() if metric in m]
            if values:
                mean, low, high = mean_interval(values)
                table[arm][metric] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
    seeds = sorted(set(scores.get(study.baseline, {})) & set(scores.get(study.treatment, {})))
    diffs = [scores[study.treatment][s][study.primary] - scores[study.baseline][s][study.primary]
             for s in seeds if study.primary in scores[study.treatment][s]
             and study.primary in scores[study.baseline][s]]
    difference = None
    reproduced = False
    if diffs:
        mean, low, high = mean_interval(diffs)
        difference = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(diffs)}
        reproduced = low > 0 if study.direction == "higher" else high < 0
    return {"study": study.name, "source": study.source, "claim": study.claim,
            "primary": study.primary, "direction": study.direction, "baseline": study.baseline,
            "treatment": study.treatment, "table": table, "difference": difference,
            "reproduced": reproduced}


def plot_arms(result: dict[str, Any], path: Path) -> Path:
    """The primary metric of every arm, mean with its 95 % interval (error bars), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in result["table"] if result["primary"] in result["table"][a]]
    rows = [result["table"][a][result["primary"]] for a in arms]
    means = [r["mean"] for r in rows]
    errors = [[r["mean"] - max(r["ci_low"], -1e9) for r in rows],
              [min(r["ci_high"], 1e9) - r["mean"] for r in rows]]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(arms), 3.2))
    ax.bar(arms, means, yerr=errors, capsize=6, color="#6a8ebf")
    ax.set_ylabel(result["primary"])
    ax.set_title(f"{result['study']}: reproduced = {str(result['reproduced']).lower()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> Path:
    """``metric`` against training step (after each stage) for every arm, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm, points in curves.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", label=arm)
    ax.set_xlabel("training step (cumulative, after each stage)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
