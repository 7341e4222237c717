"""What each stage records in MLflow: params, data inputs, sample predictions, tags."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

import registry
from components.recipe import Recipe

if TYPE_CHECKING:
    from flows.data import DataVersion

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_sha() -> str:
    """The project's commit (suffixed `-dirty` with uncommitted changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log_data_inputs(data: DataVersion, run_id: str | None = None) -> None:
    """The data version as MLflow dataset inputs: one per DVC output, with its md5."""
    for path, md5 in sorted(data.hashes.items()):
        registry.log_dataset_input(
            name=path, digest=md5, source=str(Path(data.workspace) / path), run_id=run_id
        )
    registry.set_tags({"data_version": data.version}, run_id=run_id)


def log_data_stage(recipe: Recipe, data: DataVersion, parent_run_id: str | None) -> str:
    """One MLflow run for the data stage: counts per split/task, validation report, hashes."""
    with registry.start_run("data", parent_run_id=parent_run_id,
                            tags={"stage": "data", "recipe": recipe.name}) as run_id:
        registry.log_params({"data": recipe.data.model_dump(mode="json")})
        log_data_inputs(data, run_id)
        metrics = {f"samples_{split}_{task}": n for split, per in data.counts.items()
                   for task, n in per.items()}
        registry.log_metrics(metrics)
        registry.log_dict(data.hashes, "dvc_hashes.json")
        report = Path(data.workspace) / "data" / "validation.json"
        if report.exists():
            registry.log_artifact(report)
    return run_id


def prediction_grid(rows: list[dict], images: list[Image.Image | None], cell: int = 128) -> Image.Image:
    """Sample predictions as one image: each image with its question, answer and reference."""
    cols = 4
    text_h = 44
    n = len(rows)
    grid = Image.new("RGB", (cols * cell, ((n + cols - 1) // cols) * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (row, img) in enumerate(zip(rows, images, strict=True)):
        x, y = (i % cols) * cell, (i // cols) * (cell + text_h)
        if img is not None:
            grid.paste(img.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        mark = "ok" if row["score"] >= 1 else "x"
        lines = [row["question"][:24], f"-> {row['prediction'][:20]} [{mark}]",
                 f"ref {row['answers'][0][:20]}"]
        for j, line in enumerate(lines):
            draw.text((x + 2, y + cell + 2 + 13 * j), line, fill="black")
    return grid


def log_predictions(rows: list[dict], images: list[Image.Image | None], name: str, limit: int) -> None:
    """Predictions table (all rows) and an image grid of the first `limit`."""
    import pandas as pd

    table = pd.DataFrame([{**r, "answers": " | ".join(r["answers"])} for r in rows])
    registry.log_table(table, f"{name}/predictions.json")
    registry.log_image(prediction_grid(rows[:limit], images[:limit]), f"{name}/samples.png")
