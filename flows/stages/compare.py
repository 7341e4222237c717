"""Every stage's version of a pipeline on the full held-out test split, side by side.

The evaluate stage scores each training stage's registered version with the default suite
(cached per version), so the gain of each stage shows, and reports what the two late stages
promise: alignment lowers hallucination without costing VQA accuracy, and SFT with text-only
data mixed in keeps the model answering text-only instructions. Each score shows its 95 %
bootstrap interval (half-width after ``±`` in the table, ``<stage>.<metric>_ci_low``/``_ci_high``
on the comparison run), as recorded with the version's scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import registry
from components.data.version import DataVersion
from components.recipe import Recipe
from flows.concurrency import map_in_threads
from flows.lineage import markdown_table, publish_markdown
from flows.stages.evaluate import Intervals, evaluate_version
from registry.promotion import read_intervals

COLUMNS = {"vqa_colour_accuracy": "colour", "vqa_count_accuracy": "count",
           "vqa_position_accuracy": "position", "vqa_existence_accuracy": "exists",
           "vqa_shape_accuracy": "shape",
           "vqa_accuracy": "vqa", "ocr_accuracy": "ocr", "text_accuracy": "text",
           "text_answer_nll": "text_nll",
           "caption_cider": "cider", "caption_object_recall": "cap_recall",
           "existence_hallucination_rate": "halluc_yes",
           "caption_hallucination_rate": "halluc_caption", "hallucination_rate": "halluc"}


@dataclass
class StageComparison:
    versions: dict[str, str]  # stage -> version
    metrics: dict[str, dict[str, float]]  # stage -> default-suite metrics
    checks: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    intervals: dict[str, Intervals] = field(default_factory=dict)  # stage -> metric -> (lo, hi)

    def cell(self, stage: str, metric: str) -> str:
        """``0.68±0.02``: the score and the half-width of its interval (the wider side)."""
        m, ci = self.metrics[stage], self.intervals.get(stage, {}).get(metric)
        if metric not in m:
            return "-"
        if ci is None:
            return f"{m[metric]:.2f}"
        return f"{m[metric]:.2f}±{max(m[metric] - ci[0], ci[1] - m[metric], 0.0):.2f}"

    def table(self) -> list[list[str]]:
        return [[stage, f"v{self.versions[stage]}", *(self.cell(stage, k) for k in COLUMNS)]
                for stage in self.metrics]

    def render(self) -> str:
        """Plain-text table for the terminal summary."""
        rows = self.table()
        widths = [max(len(c), *(len(r[2 + i]) for r in rows), 4) + 2
                  for i, c in enumerate(COLUMNS.values())]
        head = f"{'stage':<20}{'version':<9}" + "".join(
            f"{c:>{w}}" for c, w in zip(COLUMNS.values(), widths, strict=True))
        lines = [head] + [f"{r[0]:<20}{r[1]:<9}" + "".join(
            f"{c:>{w}}" for c, w in zip(r[2:], widths, strict=True)) for r in self.table()]
        lines += [f"  {k} = {v:.3f}" for k, v in self.checks.items()]
        return "\n".join(lines)


def alignment_checks(recipe: Recipe, metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Hallucination and VQA of the last align stage vs its parent, and text-only accuracy of
    the first SFT stage vs the stage before it (``*_before`` / ``*_after``)."""
    out: dict[str, float] = {}
    align, sft = recipe.stages_of("align"), recipe.stages_of("sft")
    if align and (parent := recipe.previous_stage(align[-1])):
        before, after = metrics.get(parent.name, {}), metrics.get(align[-1].name, {})
        if "hallucination_rate" in before and "hallucination_rate" in after:
            out["align_hallucination_before"] = before["hallucination_rate"]
            out["align_hallucination_after"] = after["hallucination_rate"]
            if before["hallucination_rate"] > 0:
                out["align_hallucination_reduction"] = (
                    1 - after["hallucination_rate"] / before["hallucination_rate"])
        if "vqa_accuracy" in before and "vqa_accuracy" in after:
            out["align_vqa_before"] = before["vqa_accuracy"]
            out["align_vqa_after"] = after["vqa_accuracy"]
            out["align_vqa_drop_points"] = 100 * (before["vqa_accuracy"] - after["vqa_accuracy"])
    if sft and (parent := recipe.previous_stage(sft[0])):
        before, after = metrics.get(parent.name, {}), metrics.get(sft[0].name, {})
        for metric in ("text_accuracy", "text_answer_nll"):
            if metric in before and metric in after:
                out[f"sft_{metric}_before"] = before[metric]
                out[f"sft_{metric}_after"] = after[metric]
    return out


def compare_stages(recipe: Recipe, versions: dict[str, str], data: DataVersion,
                   parent_run_id: str | None, force: bool,
                   scored: dict[str, dict[str, float]] | None = None) -> StageComparison:
    """Score every stage's version (default suite, reused when already scored, or taken from
    ``scored``: version -> metrics of this run; two versions at a time, see concurrency.py)
    and log the comparison: one MLflow run with ``<stage>.<metric>`` and the checks, a Prefect
    table."""
    scored = dict(scored or {})
    todo = [v for v in dict.fromkeys(versions.values()) if v not in scored]
    outcomes = map_in_threads(lambda v: evaluate_version(recipe, v, data, parent_run_id, force), todo)
    scored.update({o.version: o.metrics for o in outcomes})
    metrics = {stage: scored[version] for stage, version in versions.items()}
    intervals = {stage: read_intervals(recipe.registered_model, version)
                 for stage, version in versions.items()}
    comparison = StageComparison(versions, metrics, alignment_checks(recipe, metrics),
                                 intervals=intervals)
    with registry.start_run("compare-stages", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate"}) as run_id:
        registry.log_params({f"version.{s}": v for s, v in versions.items()})
        registry.log_metrics({f"{s}.{k}": v for s, m in metrics.items() for k, v in m.items()
                              if k in COLUMNS})
        registry.log_metrics({f"{s}.{k}_ci_{side}": ci[i] for s, cis in intervals.items()
                              for k, ci in cis.items() if k in COLUMNS
                              for i, side in enumerate(("low", "high"))})
        registry.log_metrics(comparison.checks)
    comparison.run_id = run_id
    checks = markdown_table(["check", "value"], [[k, f"{v:.3f}"] for k, v in comparison.checks.items()])
    publish_markdown(f"{recipe.name}-stage-comparison",
                     f"# {recipe.name}: every stage on the held-out test split (data "
                     f"`{data.version}`)\n\n"
                     + markdown_table(["stage", "version", *COLUMNS.values()], comparison.table())
                     + "\n\n" + checks + "\n",
                     f"per-stage test scores of {recipe.name}")
    return comparison
