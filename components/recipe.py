"""The recipe: one YAML file describing data, backbones, model, stages and evaluation.

Validated by pydantic, so a typo fails at load time and the Prefect UI can render
the recipe as a form.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.data.params import SOURCES, DataParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    steps: int = Field(100, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = Field(1, gt=0)
    log_every: int = Field(10, gt=0)


class VisionBackbone(_Strict):
    """The tiny vision tower, trained contrastively (SigLIP loss, optional FLIP patch dropping)."""

    registered_model: str = "vision-tiny"
    config: dict[str, Any] = Field(default_factory=dict)
    text_tower: dict[str, Any] = Field(default_factory=dict)
    patch_keep: float = Field(1.0, gt=0, le=1)
    hard_negatives: bool = True  # NegCLIP-style: a binding-swapped caption per image
    train: TrainSettings = TrainSettings(steps=300, batch_size=64, lr=1e-3)


class TextBackbone(_Strict):
    """The tiny causal LM, trained on the corpus text."""

    registered_model: str = "lm-tiny"
    config: dict[str, Any] = Field(default_factory=dict)
    block: int = 128
    train: TrainSettings = TrainSettings(steps=300, batch_size=16, lr=1e-3)


class Backbones(_Strict):
    vision: VisionBackbone = VisionBackbone()
    text: TextBackbone = TextBackbone()


class ModelSpec(_Strict):
    """Backbones by hub id, local directory, or `registered:<name>` (built by the backbones stage)."""

    architecture: Literal["idefics3"] = "idefics3"
    vision: str = "registered:vision-tiny"
    text: str = "registered:lm-tiny"
    scale_factor: int = Field(2, gt=0)
    max_length: int = Field(256, gt=0)
    # training images whose tower outputs standardise the image features (0: off)
    standardize_features: int = Field(0, ge=0)


Unfreeze = dict[str, Literal["frozen", "full"]]
KINDS = ("pretrain", "sft", "align")


class Stage(_Strict):
    """One training stage: what it trains, on which data, at which resolution."""

    name: str
    kind: Literal["pretrain", "sft", "align"]
    longest_edge: int = Field(gt=0)
    sources: list[str]
    unfreeze: Unfreeze
    train: TrainSettings = TrainSettings()
    beta: float = 0.1
    # align: DPO (sigmoid), IPO, length-normalised DPO, or DPO + `sft_weight` x NLL on chosen
    loss: Literal["sigmoid", "ipo", "sigmoid_norm", "sigmoid_sft"] = "sigmoid"
    sft_weight: float = Field(1.0, ge=0)
    # share of text-only samples (source `text`); None = the sources' natural mixture
    text_ratio: float | None = Field(None, ge=0, le=1)
    packing: bool = False  # pretrain/sft: several conversations per row, attention kept within each

    @model_validator(mode="after")
    def _known_sources(self) -> Stage:
        bad = [s for s in self.sources if s not in SOURCES]
        if bad:
            raise ValueError(f"stage {self.name!r}: unknown sources {bad}; known: {list(SOURCES)}")
        if self.kind == "align" and self.sources != ["preference"]:
            raise ValueError(f"stage {self.name!r}: align trains on ['preference'] only")
        if self.text_ratio is not None:
            if self.kind == "align":
                raise ValueError(f"stage {self.name!r}: text_ratio does not apply to align stages")
            if "text" not in self.sources or len(self.sources) < 2:
                raise ValueError(f"stage {self.name!r}: text_ratio needs 'text' and an image source in sources")
        if self.packing and self.kind == "align":
            raise ValueError(f"stage {self.name!r}: packing applies to pretrain/sft stages only")
        return self


class Evaluation(_Strict):
    primary_metric: str = "vqa_accuracy"
    min_delta: float = 0.0
    guarded: dict[str, float] = Field(default_factory=dict)
    max_new_tokens: int = 24
    batch_size: int = 32
    samples_to_log: int = 16
    suites: dict[str, dict[str, Any]] = Field(default_factory=dict)  # named extra benchmark suites


class Recipe(_Strict):
    name: str
    registered_model: str
    seed: int = 0
    data: DataParams = DataParams()
    backbones: Backbones | None = Backbones()
    model: ModelSpec = ModelSpec()
    stages: list[Stage]
    evaluate: Evaluation = Evaluation()

    @model_validator(mode="after")
    def _unique_stage_names(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        order = [KINDS.index(s.kind) for s in self.stages]
        if order != sorted(order):
            raise ValueError(f"stages must run pretrain -> sft -> align, got {[s.kind for s in self.stages]}")
        if self.data.image_size < max((s.longest_edge for s in self.stages), default=0):
            raise ValueError("a stage's longest_edge exceeds the generated image size")
        return self

    def stages_of(self, kind: str) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]

    def previous_stage(self, stage: Stage) -> Stage | None:
        i = self.stages.index(stage)
        return self.stages[i - 1] if i else None


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe YAML file."""
    raw = yaml.safe_load(Path(path).read_text())
    return Recipe.model_validate(raw)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (pydantic models included): a cache key."""
    def plain(p: Any) -> Any:
        return p.model_dump(mode="json") if isinstance(p, BaseModel) else p

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
