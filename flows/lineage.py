"""What each stage records: in MLflow params, data inputs, sample predictions, tags and the
model card of its version; in Prefect a markdown report (a table with the MLflow runs)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

import registry
from components.data.version import DataVersion
from components.recipe import Recipe
from flows.environment import PROJECT_ROOT

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # where `vlmforge ui` serves the embedded store


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
    registry.set_tags({"data_version": data.version, **dataset_tags(data)}, run_id=run_id)


def dataset_tags(data: DataVersion) -> dict[str, str]:
    """The lineage every run and registered version trained on the data carries:
    ``dataset.<name>`` -> the content hash of each external dataset the data holds, and
    ``contamination.train_overlap`` (training samples whose images match an evaluation
    suite's) with ``contamination.mode`` (report: they were trained on; quarantine: skipped)."""
    tags = {f"dataset.{name}": digest for name, digest in sorted(data.datasets.items())}
    if data.contamination:
        tags["contamination.train_overlap"] = str(data.contamination["train_overlap"])
        tags["contamination.mode"] = data.contamination["mode"]
    return tags


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
        if data.contamination:  # training images of the evaluation suites, and in-split copies
            registry.log_metrics({"contamination_train_overlap": float(data.contamination["train_overlap"]),
                                  "train_duplicate_pairs": float(data.contamination["train_duplicate_pairs"])})
            registry.log_artifact(Path(data.workspace) / "data" / "contamination.json")
        for name in data.datasets:  # each dataset's ingest summary and quarantine report
            folder = Path(data.workspace) / "data" / "datasets" / name
            summary = json.loads((folder / "summary.json").read_text())
            registry.log_metrics({f"dataset_{name}_{k}": float(summary[k]) for k in
                                  ("read", "accepted", "quarantined", "quarantine_rate", "images_dropped")})
            registry.log_artifact(folder / "summary.json", f"datasets/{name}")
            for ledger in ("quarantine.jsonl", "images_quarantined.jsonl"):
                registry.log_artifact(folder / "quarantine" / ledger, f"datasets/{name}")
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


def card_context(recipe: Recipe) -> dict:
    """Architecture and backbones of the recipe's VLM, as its model card shows them."""
    m = recipe.model
    backbones = {"vision": m.vision, "language": m.text}
    if recipe.backbones is not None:  # backbones trained by the recipe: show their size
        for role, spec in (("vision", recipe.backbones.vision), ("language", recipe.backbones.text)):
            size = ", ".join(f"{key.removeprefix('num_').replace('_', ' ')} {spec.config[key]}"
                             for key in ("hidden_size", "num_hidden_layers", "image_size",
                                         "patch_size") if key in spec.config)
            if size and backbones[role] == f"registered:{spec.registered_model}":
                backbones[role] += f" ({size})"
    connector = {
        "idefics3": f"pixel-shuffle connector (scale factor {m.scale_factor})",
        "llava": "MLP projector" + (f", fused with {m.fusion_vision}" if m.fusion_vision else ""),
        "idefics2": f"perceiver resampler ({m.resampler_latents} latents)",
        "idefics": f"perceiver resampler ({m.resampler_latents} latents) and gated "
                   f"cross-attention every {m.cross_layer_interval} LM layer(s)",
    }[m.architecture]
    architecture = f"{m.architecture}: vision encoder, {connector}, causal LM; max length {m.max_length}"
    return {"architecture": architecture, "backbones": backbones}


def publish_model_card(recipe: Recipe, version: str, **facts) -> str:
    """Render the version's model card and attach it (registry description + run artifact)."""
    from registry.model_card import publish_model_card as publish

    return publish(recipe.registered_model, version, **card_context(recipe), **facts)


def run_link(run_id: str | None) -> str:
    """A markdown link to an MLflow run: the tracking server's UI, else `vlmforge ui`'s."""
    if not run_id:
        return "-"
    url = registry.run_url(run_id)
    if url is None:
        experiment_id = registry.get_run(run_id)["experiment_id"]
        url = f"{LOCAL_MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"[`{run_id[:12]}`]({url})"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; cells are stringified, pipes escaped."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def artifact_key(text: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "report"


def publish_markdown(key: str, markdown: str, description: str | None = None) -> None:
    """A Prefect markdown artifact under ``key`` (the latest one shows in the Artifacts page)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)


class StepLogger:
    """The training loop's `on_log`: step metrics to the active MLflow run, and the share of
    steps done to a Prefect progress artifact (the task's progress bar in the Prefect UI)."""

    def __init__(self, total_steps: int, name: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total_steps = max(1, total_steps)
        self.artifact_id = create_progress_artifact(
            0.0, key=artifact_key(f"{name}-progress"), description=f"{name}: training steps done")

    def __call__(self, step: int, row: dict[str, float]) -> None:
        from prefect.artifacts import update_progress_artifact

        registry.log_metrics(row, step=step)
        update_progress_artifact(self.artifact_id, progress=100.0 * step / self.total_steps)
