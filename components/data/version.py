"""A data version: where a recipe's prepared data lives and which content it has.

The content hashes are DVC's (dvc.lock): the version is a short hash over the outputs that
training reads, so identical data gives an identical version on any machine. The
contamination report (``data/contamination.json``) is one of them only in quarantine mode,
where training skips the samples it lists; in report mode it changes nothing training reads,
so a recipe's version stays what it was before the stage existed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# per-source and per-dataset outputs: mixed into data/shards, so not in `version`
MIXED_OUTS = ("data/sources/", "data/datasets/")
CONTAMINATION_OUT = "data/contamination.json"
CONTAMINATION_STAGE = "contamination"


@dataclass
class DataVersion:
    """Where a recipe's data lives and which content it has."""

    workspace: str
    version: str  # short hash over the DVC outputs training reads (all but data/sources/*)
    hashes: dict[str, str]  # DVC output path -> md5
    counts: dict[str, dict[str, int]]  # split -> task -> samples
    # dataset name -> content hash of its inputs (source files and images, DVC's md5s)
    datasets: dict[str, str] = field(default_factory=dict)
    # the contamination stage's summary: mode, train_overlap (training samples matching a
    # suite's images), per-suite counts; empty without the stage
    contamination: dict[str, Any] = field(default_factory=dict)

    @property
    def shards(self) -> Path:
        return Path(self.workspace) / "data" / "shards"

    @property
    def tokenizer(self) -> Path:
        return Path(self.workspace) / "data" / "tokenizer"


def read_version(workspace: Path) -> DataVersion:
    """The data version of a DVC workspace, from its dvc.lock (every stage output's md5)."""
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    hashes = {out["path"]: out["md5"] for st in lock["stages"].values() for out in st.get("outs", [])}
    quarantine = contamination_mode(lock) == "quarantine"
    read = {p: h for p, h in hashes.items() if not p.startswith(MIXED_OUTS)
            and (p != CONTAMINATION_OUT or quarantine)}
    version = hashlib.sha256(json.dumps(read, sort_keys=True).encode()).hexdigest()[:12]
    datasets = {name.removeprefix("ingest@"): _short_hash([d["md5"] for d in st.get("deps", [])
                                                           if not d["path"].endswith(".py")])
                for name, st in lock["stages"].items() if name.startswith("ingest@")}
    return DataVersion(str(workspace), version, hashes,
                       task_counts(workspace / "data" / "shards" / "manifests"), datasets,
                       contamination_summary(workspace / CONTAMINATION_OUT))


def contamination_mode(lock: dict[str, Any]) -> str | None:
    """The mode the contamination stage ran in (its ``data.contamination`` param in dvc.lock)."""
    stage = lock["stages"].get(CONTAMINATION_STAGE) or {}
    params = next(iter((stage.get("params") or {}).values()), {})
    return params.get("data.contamination")


def contamination_summary(path: Path) -> dict[str, Any]:
    """Mode, overlapping training samples and per-suite counts of a contamination report."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {"mode": report["mode"], "train_overlap": report["train_overlap"],
            "quarantined": len(report.get("quarantined") or []),
            "suites": {name: s["train_samples"] for name, s in report["suites"].items()},
            "train_duplicate_pairs": report["train_duplicates"]["pairs"]}


def _short_hash(parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def task_counts(manifests: Path) -> dict[str, dict[str, int]]:
    """Samples per task of each split, from the split manifests."""
    counts: dict[str, dict[str, int]] = {}
    for path in sorted(manifests.glob("*.jsonl")):
        per_task: dict[str, int] = {}
        for line in path.read_text().splitlines():
            task_name = json.loads(line)["task"]
            per_task[task_name] = per_task.get(task_name, 0) + 1
        counts[path.stem] = per_task
    return counts
