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
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from components.data.params import SOURCES, TEXT_ONLY_SOURCES, DataParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    steps: int = Field(100, ge=0)  # 0: no gradient steps (a stage that only fits its connector)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = Field(1, gt=0)
    log_every: int = Field(10, gt=0)
    schedule: Literal["cosine", "wsd"] = "cosine"  # wsd: warmup, stable, linear decay to 0
    decay_fraction: float = Field(0.2, gt=0, le=1)  # wsd: share of the steps spent decaying
    checkpoint_every: int = Field(0, ge=0)  # accelerate save_state every N steps; 0 = off
    eval_every: int = Field(0, ge=0)  # val loss + a small generative val eval every N steps; 0 = off

    @model_serializer(mode="wrap")
    def _omit_default_schedule(self, handler: Any) -> Any:
        # settings that leave these at their defaults dump (and fingerprint) as before they existed
        data = handler(self)
        if isinstance(data, dict):
            for key, default in (("schedule", "cosine"), ("decay_fraction", 0.2),
                                 ("checkpoint_every", 0), ("eval_every", 0)):
                if data.get(key) == default:
                    data.pop(key)
        return data


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

    @model_validator(mode="after")
    def _some_steps(self) -> Backbones:
        for name, backbone in (("vision", self.vision), ("text", self.text)):
            if backbone.train.steps == 0:
                raise ValueError(f"backbones.{name}.train.steps must be > 0")
        return self


class ModelSpec(_Strict):
    """Backbones by hub id, local directory, or `registered:<name>` (built by the backbones stage)."""

    architecture: Literal["idefics3", "llava", "idefics2", "idefics"] = "idefics3"
    # hub id / directory / registered:<name>, or "inline": a tower built from `vision_inline`
    vision: str = "registered:vision-tiny"
    # with vision: inline, a tower config (SigLIP; CLIP with model_type: clip_vision_model)
    vision_inline: dict[str, Any] | None = None
    text: str = "registered:lm-tiny"
    scale_factor: int = Field(2, gt=0)  # idefics3: pixel-shuffle factor
    # idefics3: "pool" starts the projection as a mean over the merged patches (pool_init)
    connector_init: Literal["random", "pool"] = "random"
    resampler_latents: int = Field(16, gt=0)  # idefics2 / idefics: perceiver latents per image
    resampler_depth: int = Field(2, gt=0)
    resampler_heads: int = Field(4, gt=0)
    resampler_head_dim: int | None = Field(None, gt=0)  # None: the width / resampler_heads
    cross_layer_interval: int = Field(1, gt=0)  # idefics: a gated cross-attention layer every N
    # llava only: a second vision tower fused per patch (SPHINX), e.g. facebook/dinov2-small
    fusion_vision: str | None = None
    max_length: int = Field(256, gt=0)
    # training images whose tower outputs standardise the image features (0: off)
    standardize_features: int = Field(0, ge=0)

    @model_serializer(mode="wrap")
    def _omit_default_architecture_options(self, handler: Any) -> Any:
        # recipes that leave these at their defaults dump (and fingerprint) as before they existed
        data = handler(self)
        if isinstance(data, dict):
            for key, default in (("connector_init", "random"), ("resampler_latents", 16), ("resampler_depth", 2),
                                 ("resampler_heads", 4), ("cross_layer_interval", 1),
                                 ("fusion_vision", None), ("vision_inline", None),
                                 ("resampler_head_dim", None)):
                if data.get(key) == default:
                    data.pop(key)
        return data

    @model_validator(mode="after")
    def _inline_vision(self) -> ModelSpec:
        if (self.vision == "inline") != (self.vision_inline is not None):
            raise ValueError("model.vision: inline goes with model.vision_inline (a tower config)")
        return self


Unfreeze = dict[str, Literal["frozen", "lora", "full"]]
KINDS = ("pretrain", "sft", "align")


class GroundConnector(_Strict):
    """Fit the connector, before any gradient step, so each image token of an annotated region
    lands on the LM's embedding of the phrase naming it (components/training/grounding.py)."""

    images: int = Field(2000, gt=0)  # annotated training images the closed-form fit uses
    ridge: float = Field(1.0, gt=0)  # L2 penalty of the ridge regression
    # resolution of the fit (None: the stage's): the largest a later stage uses covers its
    # tiles and, through the global view, every smaller resolution
    longest_edge: int | None = Field(None, gt=0)


_LATER_FIELDS = {"mixture": None, "lora_rank": 8, "split_turns": False, "ground_connector": None,
                 "question_types": None, "loss_average": "token", "rejected_from": "data"}


class Stage(_Strict):
    """One training stage: what it trains, on which data, at which resolution."""

    name: str
    kind: Literal["pretrain", "sft", "align"]
    longest_edge: int = Field(gt=0)
    sources: list[str]
    unfreeze: Unfreeze
    lora_rank: int = Field(8, gt=0)  # rank of the adapters of `lora` groups (alpha = 2 x rank)
    train: TrainSettings = TrainSettings()
    beta: float = 0.1
    # align: DPO (sigmoid), IPO, length-normalised DPO, or DPO + `sft_weight` x NLL on chosen
    loss: Literal["sigmoid", "ipo", "sigmoid_norm", "sigmoid_sft"] = "sigmoid"
    sft_weight: float = Field(1.0, ge=0)
    # align: the data's rejected captions, or the SFT model's own hallucinated captions with
    # their minimal corrections as chosen (RLHF-V style, corrected_pairs.py)
    rejected_from: Literal["data", "model"] = "data"
    # share of text-only samples (source `text`); None = the sources' natural mixture
    text_ratio: float | None = Field(None, ge=0, le=1)
    packing: bool = False  # pretrain/sft: several conversations per row, attention kept within each
    # pretrain/sft: each turn of a conversation becomes its own sample (with the images), so no
    # answer can be copied from an earlier turn
    split_turns: bool = False
    # with split_turns: train only on turns of these question types (the records' `qtypes`),
    # e.g. a curriculum stage on colour and existence before the full mixture
    question_types: list[str] | None = None
    # pretrain/sft: average the loss over all labelled tokens of a batch, or per sample first
    # (then a long caption weighs as much as a one-word answer)
    loss_average: Literal["token", "sample"] = "token"
    # source -> sampling weight (the loader draws by weight); replaces `sources`, which then
    # lists its keys. None = `sources` in their natural mixture (or at `text_ratio`)
    mixture: dict[str, float] | None = None
    ground_connector: GroundConnector | None = None  # pretrain: fit the connector first

    @model_validator(mode="before")
    @classmethod
    def _sources_from_mixture(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mixture") and "sources" not in data:
            data = {**data, "sources": list(data["mixture"])}
        return data

    @model_serializer(mode="wrap")
    def _omit_defaults_of_later_fields(self, handler: Any) -> Any:
        # fields added after the first recipes dump (and fingerprint) nothing at their
        # defaults, so stage cache keys stay what they were before each field existed
        data = handler(self)
        if isinstance(data, dict):
            for name, default in _LATER_FIELDS.items():
                if getattr(self, name) == default:
                    data.pop(name, None)
        return data

    @model_validator(mode="after")
    def _valid_mixture(self) -> Stage:
        if self.mixture is None:
            return self
        if not self.mixture:
            raise ValueError(f"stage {self.name!r}: mixture is empty")
        bad = {s: w for s, w in self.mixture.items() if not w > 0}
        if bad:
            raise ValueError(f"stage {self.name!r}: mixture weights must be > 0, got {bad}")
        if sorted(self.sources) != sorted(self.mixture):
            raise ValueError(f"stage {self.name!r}: mixture replaces sources; sources "
                             f"{self.sources} differ from the mixture's {list(self.mixture)}")
        if self.text_ratio is not None:
            raise ValueError(f"stage {self.name!r}: give the text share as the mixture weight "
                             "of 'text', not text_ratio")
        return self

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
            text_only = [s for s in self.sources if s in TEXT_ONLY_SOURCES]
            if not text_only or len(text_only) == len(self.sources):
                raise ValueError(f"stage {self.name!r}: text_ratio needs a text-only source "
                                 f"{list(TEXT_ONLY_SOURCES)} and an image source in sources")
        if self.rejected_from == "model" and self.kind != "align":
            raise ValueError(f"stage {self.name!r}: rejected_from applies to align stages only")
        if self.packing and self.kind == "align":
            raise ValueError(f"stage {self.name!r}: packing applies to pretrain/sft stages only")
        if self.ground_connector is not None and self.kind != "pretrain":
            raise ValueError(f"stage {self.name!r}: ground_connector applies to pretrain stages only")
        if self.loss_average == "sample" and (self.packing or self.kind == "align"):
            raise ValueError(f"stage {self.name!r}: loss_average: sample applies to unpacked "
                             "pretrain/sft stages")
        if self.question_types is not None and (not self.split_turns or not self.question_types):
            raise ValueError(f"stage {self.name!r}: question_types selects turns: it needs "
                             "split_turns: true and at least one type")
        if self.train.steps == 0 and self.ground_connector is None:
            raise ValueError(f"stage {self.name!r}: train.steps is 0; only a stage with "
                             "ground_connector may take no gradient steps")
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
