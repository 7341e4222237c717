"""The end-of-run summary table printed by `vlmforge run`."""

from __future__ import annotations

from dataclasses import dataclass

SHORT = {"loss_first": "loss_first", "loss_last": "loss",
         "zero_shot_caption_retrieval": "retrieval", "ground_heldout_r2": "ground_r2_val"}
KEY_METRICS = tuple(SHORT)


@dataclass
class Row:
    stage: str
    run_id: str | None
    version: str
    trainable: int
    seconds: float
    cached: bool
    metrics: dict[str, float]


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{SHORT[k]}={metrics[k]:.2f}" for k in KEY_METRICS if k in metrics)


def render(rows: list[Row], scores: dict[str, float], champion: str | None, model_name: str,
           promotion: str, data_version: str, wall: float, per_stage: str = "") -> str:
    stage_w = max([20, *(len(r.stage) for r in rows)]) + 2  # columns fit their longest entry
    version_w = max([14, *(len(r.version) for r in rows)]) + 2
    header = (f"{'stage':<{stage_w}}{'mlflow run':<34}{'version':<{version_w}}{'trainable':>11}"
              f"{'wall s':>8}  metrics")
    lines = ["", f"vlmforge run: {model_name}, data version {data_version}, {wall:.0f}s wall", "",
             header, "-" * len(header)]
    for r in rows:
        wall_s = "cached" if r.cached else f"{r.seconds:.0f}"
        lines.append(f"{r.stage:<{stage_w}}{(r.run_id or '-'):<34}{r.version:<{version_w}}"
                     f"{r.trainable:>11,}{wall_s:>8}  {_fmt_metrics(r.metrics)}")
    lines += ["", "benchmark scores (held-out test split; the recipe's suites prefixed with their name):"]
    key_w = max([30, *map(len, scores)]) + 2
    lines += [f"  {k:<{key_w}}{v:.3f}" for k, v in sorted(scores.items())]
    if per_stage:
        lines += ["", "every stage on the held-out test split:", per_stage]
    lines += ["", f"registry: models:/{model_name}@champion -> version {champion}  ({promotion})",
              "browse runs, curves, sample predictions and the registry:  vlmforge ui", ""]
    return "\n".join(lines)
