"""The data report of one preparation run: counts per task and split, the quarantine table and
an image grid of samples per source, rendered as markdown + PNG (flows/ logs them).

Everything is read from what the data stages wrote under ``data/``: the manifests of
``data/shards``, ``validation.json`` and any ``quarantine.jsonl`` ledgers (read generically:
counted per file and rule), so new sources, tasks and rules need no change here.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from components.data.shards import read_samples

GRID_CELL = 96
LABEL_WIDTH = 120


@dataclass
class DataReport:
    """What one preparation run produced and rejected."""

    tasks: dict[str, dict[str, int]]  # split -> task -> samples
    sources: dict[str, dict[str, int]]  # split -> source -> samples
    quarantine: list[tuple[str, str, int]]  # (where, rule, records)
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> summary

    @property
    def total(self) -> int:
        return sum(n for per in self.tasks.values() for n in per.values())


def _manifest_counts(manifests: Path, column: str) -> dict[str, dict[str, int]]:
    out = {}
    for path in sorted(manifests.glob("*.jsonl")):
        rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
        out[path.stem] = dict(Counter(row[column] for row in rows))
    return out


def _quarantine_rows(data_dir: Path) -> list[tuple[str, str, int]]:
    rows = []
    for ledger in sorted(data_dir.rglob("quarantine.jsonl")):
        where = str(ledger.parent.relative_to(data_dir))
        rules = Counter(json.loads(line).get("rule", "?")
                        for line in ledger.read_text(encoding="utf-8").splitlines() if line.strip())
        rows += [(where, rule, n) for rule, n in sorted(rules.items())]
    return rows


def _validation(path: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, int]]]:
    """Per-split summary of validation.json, and its failed expectations as quarantine-like rows."""
    if not path.exists():
        return {}, []
    summary, failed = {}, []
    for split, rep in json.loads(path.read_text()).items():
        if not isinstance(rep, dict):
            continue
        summary[split] = {k: rep[k] for k in ("n_rows", "success") if k in rep}
        for f in rep.get("failures") or []:
            columns = ",".join(f.get("columns") or [])
            failed.append((f"validation/{split}", f"{f.get('expectation')}({columns})",
                           int(f.get("unexpected_count") or 0)))
    return summary, failed


def build_report(data_dir: str | Path) -> DataReport:
    """Read the report's numbers from a data folder (``data/`` of a DVC workspace)."""
    data_dir = Path(data_dir)
    manifests = data_dir / "shards" / "manifests"
    validation, failed = _validation(data_dir / "validation.json")
    return DataReport(_manifest_counts(manifests, "task"), _manifest_counts(manifests, "source"),
                      _quarantine_rows(data_dir) + failed, validation)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_table(counts: dict[str, dict[str, int]], name: str) -> str:
    splits = list(counts)
    keys = list(dict.fromkeys(k for per in counts.values() for k in per))
    rows = [[k, *(counts[s].get(k, 0) for s in splits), sum(counts[s].get(k, 0) for s in splits)]
            for k in keys]
    rows.append(["**total**", *(sum(counts[s].values()) for s in splits),
                 sum(sum(per.values()) for per in counts.values())])
    return _table([name, *splits, "all"], rows)


def render_markdown(report: DataReport, version: str, grid_name: str = "samples.png") -> str:
    """The report as markdown (the Prefect artifact and the MLflow ``data_report.md``)."""
    quarantine = (_table(["where", "rule", "records"], [list(r) for r in report.quarantine])
                  if report.quarantine else "No record quarantined, no expectation failed.")
    checks = ", ".join(f"{s}: {v.get('n_rows', '?')} rows {'ok' if v.get('success') else 'FAILED'}"
                       for s, v in report.validation.items()) or "no validation report"
    return "\n\n".join([
        f"# Data report, version `{version}`",
        f"{report.total:,} samples. Validation: {checks}.",
        "## Samples per task and split", _split_table(report.tasks, "task"),
        "## Samples per source and split", _split_table(report.sources, "source"),
        "## Quarantine", quarantine,
        "## Samples per source",
        f"Image grid (first samples of each source's train shards): MLflow artifact `{grid_name}`.",
    ]) + "\n"


def _text_tile(text: str, size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), (245, 245, 235))
    lines = textwrap.wrap(text, width=max(8, size // 6))[: size // 12]
    ImageDraw.Draw(tile).multiline_text((3, 3), "\n".join(lines), fill="black", spacing=1)
    return tile


def _tile(sample: Any, size: int) -> Image.Image:
    if not sample.images:
        messages = sample.record.get("messages") or []
        text = " ".join(p.get("text", "") for m in messages[:1] for p in
                        (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]))
        return _text_tile(text or sample.key, size)
    image = ImageOps.contain(sample.images[0].convert("RGB"), (size, size), Image.NEAREST)
    tile = Image.new("RGB", (size, size), "white")
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def source_shards(shards_dir: str | Path, split: str = "train") -> dict[str, list[Path]]:
    """Shard files of a split grouped by source (``<source>-NNNN.tar``), in name order."""
    groups: dict[str, list[Path]] = {}
    for path in sorted((Path(shards_dir) / split).glob("*.tar")):
        groups.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
    return groups


def sample_grid(shards_dir: str | Path, split: str = "train", per_source: int = 6,
                cell: int = GRID_CELL) -> Image.Image:
    """One row per source: its name, then its first `per_source` samples (first image, or the
    prompt text for text-only samples)."""
    groups = source_shards(shards_dir, split) or source_shards(shards_dir, "test")
    grid = Image.new("RGB", (LABEL_WIDTH + per_source * (cell + 2), max(1, len(groups)) * (cell + 2)),
                     "white")
    draw = ImageDraw.Draw(grid)
    for row, (source, paths) in enumerate(groups.items()):
        y = row * (cell + 2)
        draw.text((4, y + cell // 2 - 6), source, fill="black")
        for col, sample in enumerate(read_samples(paths)):
            if col == per_source:
                break
            grid.paste(_tile(sample, cell), (LABEL_WIDTH + col * (cell + 2), y))
    return grid
