"""Validated parameters of the data stages (the ``data:`` section of a params file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.data.datasets import DATASET_NAME, DatasetSpec
from components.data.synthetic import EXTRA_SOURCES, SOURCES

SPLITS: tuple[str, ...] = ("train", "val", "test")
CONTAMINATION_MODES: tuple[str, ...] = ("report", "quarantine")  # components/data/duplicates.py

DEFAULT_SPLITS: dict[str, dict[str, int]] = {
    "train": {
        "scenes_caption": 2000,
        "scenes_vqa": 4000,
        "ocr": 1000,
        "text": 1000,
        "preference": 1500,
        **dict.fromkeys(EXTRA_SOURCES, 0),
    },
    "val": {"scenes_caption": 50, "scenes_vqa": 100, "ocr": 50, "text": 50, "preference": 50,
            **dict.fromkeys(EXTRA_SOURCES, 0)},
    "test": {"scenes_caption": 100, "scenes_vqa": 400, "ocr": 100, "text": 100, "preference": 0,
             **dict.fromkeys(EXTRA_SOURCES, 0)},
}


class DataParams(BaseModel):
    """Seed, image size, sharding, vocabulary size and per-split sample counts per source."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    image_size: int = Field(64, ge=16, le=2048)
    shard_size: int = Field(500, gt=0)
    vocab_size: int = Field(1024, ge=384)
    split_digits: bool = False  # the tokenizer gives every digit its own token (as Llama's does)
    splits: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SPLITS.items()}
    )
    # external datasets in public layouts, by name (a DVC ingest stage each; see datasets.py)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    # `vlmforge ingest --recipe`: fail when a larger share of the records read is quarantined
    # (not a data-stage parameter: `stage_params` leaves it out of params.yaml)
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    # training images that duplicate an evaluation suite's images (the `contamination` stage):
    # only reported, or also quarantined (left out of what training reads; a new data version)
    contamination: Literal[CONTAMINATION_MODES] = "report"  # type: ignore[valid-type]

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, datasets: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        for name in datasets:
            if not re.match(DATASET_NAME, name):
                raise ValueError(f"dataset name {name!r}: lower-case letters, digits and _, "
                                 "starting with a letter (it names the dataset's shards)")
            if name in SOURCES:
                raise ValueError(f"dataset name {name!r} is a synthetic source's name")
        return datasets

    @field_validator("splits")
    @classmethod
    def _known_splits_and_sources(
        cls, splits: dict[str, dict[str, int]]
    ) -> dict[str, dict[str, int]]:
        for split, counts in splits.items():
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
            for source, n in counts.items():
                if source not in SOURCES:
                    raise ValueError(
                        f"unknown source {source!r} in split {split!r}; expected one of {list(SOURCES)}"
                    )
                if n < 0:
                    raise ValueError(f"negative count {n} for source {source!r} in split {split!r}")
        return splits

    def stage_params(self) -> dict[str, Any]:
        """The ``data:`` section of params.yaml: what the DVC data stages read."""
        return self.model_dump(mode="json", exclude={"max_quarantine_rate"})

    def counts(self, split: str) -> dict[str, int]:
        """Sample counts of ``split`` in canonical source order: the default corpus's five
        sources always (0 when missing), the other families when the split names them."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in params; have {list(self.splits)}")
        named = self.splits[split]
        return {s: named.get(s, 0) for s in SOURCES if s not in EXTRA_SOURCES or s in named}


def load_data_params(path: str | Path) -> DataParams:
    """Parse the ``data:`` section of a YAML params file."""
    raw: Any = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "data" not in raw:
        raise ValueError(f"{path}: no top-level 'data:' section")
    return DataParams.model_validate(raw["data"] or {})
