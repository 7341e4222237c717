"""The recipe: one YAML file describing data, backbones, model, stages and evaluation.

Validated by pydantic, so a typo fails at load time and the Prefect UI can render the
recipe as a form. This module owns the training vocabularies (stage kinds, schedules,
losses) and the cache keys; the other vocabularies come from the light module that owns
them (sources: components.data.synthetic; architectures: components.model.architectures;
suite kinds: components.evaluation.suites). Each registry that implements a vocabulary
checks at import that it covers exactly these names.

A stage is one of three kinds, each with only its own options (`PretrainStage`,
`SftStage`, `AlignStage`; `Stage` is their union on ``kind``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from components.data.params import DataParams
from components.data.synthetic import SOURCE_TASK, SOURCES, TEXT_ONLY_SOURCES
from components.model.architectures import ARCHITECTURES
from components.model.architectures import spec as architecture_spec
from components.model.spec import UNFREEZE_MODES, ModelSpec

STAGE_KINDS: tuple[str, ...] = ("pretrain", "sft", "align")  # in the order a pipeline runs them
SCHEDULES: tuple[str, ...] = ("cosine", "wsd")  # components.training.loop
PREFERENCE_LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "sigmoid_norm", "sigmoid_sft")  # objectives
LOSS_AVERAGES: tuple[str, ...] = ("token", "sample")  # objectives: supervised loss reductions
REJECTED_FROM: tuple[str, ...] = ("data", "model")  # align: where rejected answers come from
DTYPES: tuple[str, ...] = ("fp32", "bf16")  # the dtype a stage loads and trains its model in
# align: where the reference log-probs come from (components.training.reference)
REFERENCES: tuple[str, ...] = ("copy", "cached", "adapters")

# Recipe, stage and registered-model names become paths ($VLMFORGE_HOME/data/<recipe>,
# checkpoints/<recipe>/<stage>-<key>), MLflow model names and Prefect artifact keys.
NAME_RULE = ("letters, digits, '.', '_' and '-' only ([A-Za-z0-9._-]), starting with a letter "
             "or digit, at most 128 characters")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _safe_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"name {value!r} breaks the naming rule: {NAME_RULE}")
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]  # a name that is safe as a path part


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Strict):
    """The optimisation of one stage (or backbone): steps, batch, schedule, checkpoints."""

    steps: int = Field(100, ge=0)  # 0: no gradient steps (a stage that only fits its connector)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = Field(1, gt=0)
    log_every: int = Field(10, gt=0)
    schedule: Literal[SCHEDULES] = "cosine"  # type: ignore[valid-type]  # wsd: warmup, stable, decay
    decay_fraction: float = Field(0.2, gt=0, le=1)  # wsd: share of the steps spent decaying
    # monitoring: what the loop records, not what it learns (left out of cache keys)
    checkpoint_every: int = Field(0, ge=0)  # accelerate save_state every N steps; 0 = off
    keep_checkpoints: int = Field(2, gt=0)  # the newest N checkpoints are kept
    eval_every: int = Field(0, ge=0)  # val loss + a small generative val eval every N steps; 0 = off


MONITORING = ("checkpoint_every", "keep_checkpoints", "eval_every")


class VisionBackbone(_Strict):
    """The tiny vision tower, trained contrastively (SigLIP loss, optional FLIP patch dropping):
    SigLIP-shaped, or CLIP-shaped with ``config.model_type: clip_vision_model``."""

    registered_model: SafeName = "vision-tiny"
    config: dict[str, Any] = Field(default_factory=dict)
    text_tower: dict[str, Any] = Field(default_factory=dict)
    patch_keep: float = Field(1.0, gt=0, le=1)
    hard_negatives: bool = True  # NegCLIP-style: a binding-swapped caption per image
    train: TrainSettings = TrainSettings(steps=300, batch_size=64, lr=1e-3)

    @field_validator("config")
    @classmethod
    def _tower_type(cls, config: dict[str, Any]) -> dict[str, Any]:
        kind = config.get("model_type", "siglip_vision_model")
        if kind not in ("siglip_vision_model", "clip_vision_model"):
            raise ValueError(f"backbones.vision.config.model_type {kind!r}: the tiny tower is "
                             "siglip_vision_model or clip_vision_model")
        return config


class TextBackbone(_Strict):
    """The tiny causal LM, trained on the corpus text."""

    registered_model: SafeName = "lm-tiny"
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


Unfreeze = dict[str, Literal[UNFREEZE_MODES]]  # type: ignore[valid-type]


class GroundConnector(_Strict):
    """Fit the connector, before any gradient step, so each image token of an annotated region
    lands on the LM's embedding of the phrase naming it (components/training/grounding.py)."""

    images: int = Field(2000, gt=0)  # annotated training images the closed-form fit uses
    ridge: float = Field(1.0, gt=0)  # L2 penalty of the ridge regression
    # resolution of the fit (None: the stage's): a larger one covers its tiles and, through the
    # global view, every smaller resolution, at a cost in fit on that view (the ground-32px study)
    longest_edge: int | None = Field(None, gt=0)
    # the phrase also names the region's quadrant ("red circle top left"), so an image token
    # carries where it is as a word, as it carries colour and shape
    name_position: bool = False
    # an image token's target: "phrases", the LM's embedding of the phrase; "words", the
    # phrase's bag of words, one coordinate per word, folded under each cross-attention layer's
    # random keys and values (idefics without a resampler; grounding.py)
    targets: Literal["phrases", "words"] = "phrases"


class StageBase(_Strict):
    """What every training stage has: what it trains, on which data, at which resolution."""

    name: SafeName
    longest_edge: int = Field(gt=0)
    sources: list[str]
    unfreeze: Unfreeze
    lora_rank: int = Field(8, gt=0)  # rank of the adapters of `lora` groups (alpha = 2 x rank)
    train: TrainSettings = TrainSettings()
    # source -> sampling weight (the loader draws by weight); replaces `sources`, which then
    # lists its keys. None = `sources` in their natural mixture
    mixture: dict[str, float] | None = None
    # memory: the dtype the model is loaded and trained in, and recomputing the activations of
    # the vision tower's and the LM's layers in backward (gradient checkpointing)
    dtype: Literal[DTYPES] = "fp32"  # type: ignore[valid-type]
    gradient_checkpointing: bool = False

    @model_validator(mode="before")
    @classmethod
    def _sources_from_mixture(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mixture") and "sources" not in data:
            data = {**data, "sources": list(data["mixture"])}
        return data

    @model_validator(mode="after")
    def _valid_sources(self) -> StageBase:
        if not self.sources:
            raise ValueError(f"stage {self.name!r}: name at least one source")
        if self.mixture is not None:
            if not self.mixture:
                raise ValueError(f"stage {self.name!r}: mixture is empty")
            bad_weights = {s: w for s, w in self.mixture.items() if not w > 0}
            if bad_weights:
                raise ValueError(f"stage {self.name!r}: mixture weights must be > 0, got {bad_weights}")
            if sorted(self.sources) != sorted(self.mixture):
                raise ValueError(f"stage {self.name!r}: mixture replaces sources; sources "
                                 f"{self.sources} differ from the mixture's {list(self.mixture)}")
        if self.train.steps == 0 and not self._fits_without_steps():
            raise ValueError(f"stage {self.name!r}: train.steps is 0; only a pretrain stage with "
                             "ground_connector may take no gradient steps")
        return self

    def _fits_without_steps(self) -> bool:
        return False


class SupervisedStage(StageBase):
    """Pretrain and SFT: next-token loss on the assistant turns of chat samples."""

    # share of text-only samples (a text-only source); None = the sources' natural mixture
    text_ratio: float | None = Field(None, ge=0, le=1)
    packing: bool = False  # several conversations per row, attention kept within each
    # each turn of a conversation becomes its own sample (with the images), so no answer can
    # be copied from an earlier turn
    split_turns: bool = False
    # with split_turns: train only on turns of these question types (the records' `qtypes`),
    # e.g. a curriculum stage on colour and existence before the full mixture
    question_types: list[str] | None = None
    # average the loss over all labelled tokens of a batch, or per sample first (then a long
    # caption weighs as much as a one-word answer)
    loss_average: Literal[LOSS_AVERAGES] = "token"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _supervised_rules(self) -> SupervisedStage:
        if self.text_ratio is not None:
            if self.mixture is not None:
                raise ValueError(f"stage {self.name!r}: give the text share as the mixture weight "
                                 "of 'text', not text_ratio")
            text_only = [s for s in self.sources if s in TEXT_ONLY_SOURCES]
            if not text_only or len(text_only) == len(self.sources):
                raise ValueError(f"stage {self.name!r}: text_ratio needs a text-only source "
                                 f"{list(TEXT_ONLY_SOURCES)} and an image source in sources")
        if self.loss_average == "sample" and self.packing:
            raise ValueError(f"stage {self.name!r}: loss_average: sample applies to unpacked stages")
        if self.question_types is not None and (not self.split_turns or not self.question_types):
            raise ValueError(f"stage {self.name!r}: question_types selects turns: it needs "
                             "split_turns: true and at least one type")
        return self


class PretrainStage(SupervisedStage):
    """Aligns the backbones: captions and short answers, rising resolution, unfreezing."""

    kind: Literal["pretrain"]
    ground_connector: GroundConnector | None = None  # fit the connector first

    def _fits_without_steps(self) -> bool:
        return self.ground_connector is not None


class SftStage(SupervisedStage):
    """Supervised fine-tuning on multi-turn conversations, text-only instructions mixed in."""

    kind: Literal["sft"]


class Replay(_Strict):
    """Supervised rows trained beside the preference pairs (InstructGPT's PPO-ptx): each step
    adds ``weight`` x the per-sample next-token loss on a batch of ``sources`` conversations,
    so alignment keeps the skills its pairs never ask about."""

    sources: list[str] = Field(min_length=1)
    batch_size: int = Field(8, gt=0)
    weight: float = Field(1.0, gt=0)
    # one sample per question (as the pretraining stages): in a whole conversation an earlier
    # turn can name the object a later one asks about, which teaches "yes" to absent objects
    split_turns: bool = False


class AlignStage(StageBase):
    """Preference tuning (DPO family) against the parent model as the reference: a frozen
    copy of it (`copy`), its log-probs computed once before training and cached (`cached`),
    or the policy with its LoRA adapters off (`adapters`); the last two hold no second model."""

    kind: Literal["align"]
    beta: float = 0.1
    # DPO (sigmoid), IPO, length-normalised DPO, or DPO + `sft_weight` x NLL on chosen
    loss: Literal[PREFERENCE_LOSSES] = "sigmoid"  # type: ignore[valid-type]
    sft_weight: float = Field(1.0, ge=0)
    # the data's rejected captions, or the SFT model's own hallucinated captions with their
    # minimal corrections as chosen (RLHF-V style, corrected_pairs.py)
    rejected_from: Literal[REJECTED_FROM] = "data"  # type: ignore[valid-type]
    reference: Literal[REFERENCES] = "copy"  # type: ignore[valid-type]
    replay: Replay | None = None  # supervised rows beside the pairs against the alignment tax

    @model_validator(mode="after")
    def _preference_sources(self) -> AlignStage:
        if self.rejected_from == "model" and self.sources != ["preference"]:
            raise ValueError(f"stage {self.name!r}: rejected_from: model rewrites the captions of "
                             "annotated scenes, which only the synthetic 'preference' source has "
                             f"(got {self.sources}); use rejected_from: data")
        if self.reference != "copy" and self.rejected_from == "model":
            raise ValueError(f"stage {self.name!r}: rejected_from: model captions with the "
                             f"reference while the policy trains, which needs reference: copy "
                             f"(got reference: {self.reference})")
        if self.reference == "adapters":
            modes = set(self.unfreeze.values())
            if "lora" not in modes or "full" in modes:
                raise ValueError(f"stage {self.name!r}: reference: adapters needs a LoRA policy "
                                 "(every group lora or frozen, at least one lora: with the "
                                 f"adapters off it is the parent model); unfreeze is {self.unfreeze}")
        return self


Stage = Annotated[PretrainStage | SftStage | AlignStage, Field(discriminator="kind")]
STAGE_CLASSES: dict[str, type[StageBase]] = {"pretrain": PretrainStage, "sft": SftStage,
                                             "align": AlignStage}
if tuple(STAGE_CLASSES) != STAGE_KINDS:
    raise RuntimeError(f"stage classes {list(STAGE_CLASSES)} != STAGE_KINDS {list(STAGE_KINDS)}")
_STAGE = TypeAdapter(Stage)


def parse_stage(data: Any) -> StageBase:
    """One stage from its recipe section (a dict), as the class of its ``kind``."""
    return _STAGE.validate_python(data)


class Evaluation(_Strict):
    """The benchmark settings and the promotion gate (registry/promotion.py). The gate promotes
    only when the 95 % interval of the paired gain on ``primary_metric`` lies above
    ``min_delta`` and no guarded metric drops past its tolerance beyond its own interval; by
    default it guards the pooled hallucination rate and every suite's primary score."""

    primary_metric: str = "vqa_accuracy"
    min_delta: float = Field(0.0, allow_inf_nan=False)
    # metric -> how much it may drop (beyond its interval); a metric named here overrides
    # its suite's guard
    guarded: dict[str, float] = Field(default_factory=lambda: {"hallucination_rate": 0.0})
    # tolerance of each suite's primary score (synthetic vqa_accuracy, POPE mean_f1, official
    # accuracy, caption CIDEr), the gate's primary excepted; None: suites are not guarded
    guard_suites: float | None = Field(0.0, ge=0, allow_inf_nan=False)
    # metrics (or name suffixes after "_") where lower is better; the rest: higher is better
    lower_is_better: list[str] = Field(
        default_factory=lambda: ["hallucination_rate", "chair_i", "unparsed"])
    confidence: float = Field(0.95, gt=0, lt=1)  # of every interval
    resamples: int = Field(2000, gt=0)  # bootstrap draws per interval
    interval_seed: int = 0  # seed of the bootstrap draws
    max_new_tokens: int = 24
    batch_size: int = 32
    samples_to_log: int = 16
    suites: dict[str, dict[str, Any]] = Field(default_factory=dict)  # named extra benchmark suites

    @model_validator(mode="after")
    def _valid_suites(self) -> Evaluation:
        bad = {m: t for m, t in self.guarded.items() if not 0 <= t < float("inf")}
        if bad:
            raise ValueError(f"evaluate.guarded: tolerances must be finite and >= 0, got {bad}")
        if self.suites:
            from components.evaluation.suites import parse_suites

            parse_suites(self.suites, "evaluate.suites", Path.cwd())
        return self


class Recipe(_Strict):
    name: SafeName
    registered_model: SafeName
    seed: int = 0
    data: DataParams = DataParams()
    backbones: Backbones | None = Backbones()
    model: ModelSpec = Field(default_factory=ModelSpec)
    stages: list[Stage]
    evaluate: Evaluation = Evaluation()

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        order = [STAGE_KINDS.index(s.kind) for s in self.stages]
        if order != sorted(order):
            raise ValueError(f"stages must run {' -> '.join(STAGE_KINDS)}, got {[s.kind for s in self.stages]}")
        if self.data.image_size < max((s.longest_edge for s in self.stages), default=0):
            raise ValueError("a stage's longest_edge exceeds the generated image size")
        return self

    @model_validator(mode="after")
    def _known_sources(self) -> Recipe:
        tasks = source_tasks(self.data)
        for stage in self.stages:
            bad = [s for s in stage.sources if s not in tasks]
            if bad:
                raise ValueError(f"stage {stage.name!r}: unknown sources {bad}; known: synthetic "
                                 f"{list(SOURCES)} and datasets {list(self.data.datasets)}")
            if stage.kind == "align":
                other = [s for s in stage.sources if tasks[s] != ("preference",)]
                if other:
                    raise ValueError(f"stage {stage.name!r}: align trains on preference data "
                                     f"(task 'preference'); {other} are not")
                replayed = stage.replay.sources if stage.replay else []
                bad = [s for s in replayed if tasks.get(s, ("preference",)) == ("preference",)]
                if bad:
                    raise ValueError(f"stage {stage.name!r}: replay sources must be known "
                                     f"supervised sources (not preference pairs); {bad} are not")
        return self

    @model_validator(mode="after")
    def _architecture_features(self) -> Recipe:
        """What a stage asks of the architecture, refused here rather than mid-pipeline."""
        arch = architecture_spec(self.model.architecture)
        for stage in self.stages:
            if getattr(stage, "packing", False) and not arch.supports.packing:
                raise ValueError(f"stage {stage.name!r}: packing is not supported by architecture "
                                 f"{arch.name!r} (rule: packing needs an architecture whose "
                                 "spec supports it: "
                                 f"{[a for a in ARCHITECTURES if architecture_spec(a).supports.packing]})")
        edges = sorted({s.longest_edge for s in self.stages})
        tower = self._tower_size()
        if not arch.supports.splitting and (len(edges) > 1 or (tower and edges and edges != [tower])):
            raise ValueError(f"architecture {arch.name!r} has no image splitting: every stage runs "
                             f"at the vision tower's size{f' ({tower} px)' if tower else ''}; the "
                             f"stages ask for {edges} (rule: rising resolution needs splitting)")
        return self

    def _tower_size(self) -> int | None:
        """The vision tower's native size when the recipe defines the tower itself."""
        m, b = self.model, self.backbones
        if m.vision == "inline":
            return (m.vision_inline or {}).get("image_size")
        if b is not None and m.vision == f"registered:{b.vision.registered_model}":
            return b.vision.config.get("image_size", 32)  # the tiny tower's default size
        return None

    def stages_of(self, kind: str) -> list[StageBase]:
        return [s for s in self.stages if s.kind == kind]

    def previous_stage(self, stage: StageBase) -> StageBase | None:
        i = self.stages.index(stage)
        return self.stages[i - 1] if i else None


def source_tasks(data: DataParams) -> dict[str, tuple[str, ...]]:
    """Every source a stage may name, with the tasks of its records: the synthetic families
    and the recipe's datasets (their format's tasks; empty: any task)."""
    from components.data.ingest import FORMATS

    return {**{s: (t,) for s, t in SOURCE_TASK.items()},
            **{name: FORMATS[spec.format].tasks for name, spec in data.datasets.items()}}


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe YAML file."""
    raw = yaml.safe_load(Path(path).read_text())
    return Recipe.model_validate(raw)


# ---- cache keys ---------------------------------------------------------------------------
# A key covers what a result depends on, and nothing else. The views below are the only place
# that knows the keys' history: fields added after the first recipes are left out at their
# defaults, and stage options are keyed as the first (flat) stage schema wrote them, so no
# cached version is retrained because the schema grew. tests/test_recipe_keys.py pins them.

_FIRST_STAGE_OPTIONS = {"beta": 0.1, "loss": "sigmoid", "sft_weight": 1.0, "text_ratio": None,
                        "packing": False}
_LATER_STAGE_OPTIONS = {"mixture": None, "lora_rank": 8, "split_turns": False,
                        "ground_connector": None, "question_types": None, "loss_average": "token",
                        "rejected_from": "data", "dtype": "fp32", "replay": None}
# how a stage computes, not what: recomputed activations and the reference's source give the
# same result, so they are never keyed (a run with them reuses the version without)
_NOT_KEYED_STAGE_OPTIONS = ("gradient_checkpointing", "reference")
_LATER_TRAIN = {"schedule": "cosine", "decay_fraction": 0.2}
_LATER_NESTED = {"replay": {"split_turns": False},
                 "ground_connector": {"name_position": False, "targets": "phrases"}}
_LATER_MODEL = {"connector_init": "random", "resampler_latents": 16, "resampler_depth": 2,
                "resampler_heads": 4, "cross_layer_interval": 1, "fusion_vision": None,
                "vision_inline": None, "resampler_head_dim": None, "cross_attn_gate": "zeros",
                "use_resampler": True, "cross_attn_qk_norm": False}


def _without_defaults(data: dict, defaults: dict) -> dict:
    return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}


def _train_view(train: TrainSettings) -> dict:
    return _without_defaults(train.model_dump(mode="json", exclude=set(MONITORING)), _LATER_TRAIN)


def _stage_view(stage: StageBase) -> dict:
    data = {**_FIRST_STAGE_OPTIONS, **stage.model_dump(mode="json", exclude=set(_NOT_KEYED_STAGE_OPTIONS)),
            "train": _train_view(stage.train)}
    for option, defaults in _LATER_NESTED.items():
        if data.get(option):
            data[option] = _without_defaults(data[option], defaults)
    return _without_defaults(data, _LATER_STAGE_OPTIONS)


def _model_view(model: ModelSpec) -> dict:
    view = _without_defaults(model.model_dump(mode="json"), _LATER_MODEL)
    if model.architecture == "idefics" and not model.use_resampler:
        # the connector group of Idefics without its resampler held nothing before 2026-12-06
        # and holds the cross-attention's keys and values since: a stage that names it means
        # something else now, so its versions from before are not reused
        view["connector_group"] = "cross-attention keys and values"
    return view


# The first keys hashed the whole evaluate section, the gate's thresholds too, though no score
# depends on them: they are keyed at their first defaults, so tuning the gate never re-scores a
# version; the gate's later fields are left out; the interval settings (their intervals are
# recorded with the scores) are left out at their defaults.
_FIRST_GATE = {"min_delta": 0.0, "guarded": {}}
_GATE_ONLY = ("guard_suites", "lower_is_better")
_LATER_EVALUATION = {"confidence": 0.95, "resamples": 2000, "interval_seed": 0}


def evaluation_view(evaluate: Evaluation) -> dict:
    """What a version's scores depend on in the evaluate section (the cache keys' view)."""
    data = {**evaluate.model_dump(mode="json", exclude=set(_GATE_ONLY)), **_FIRST_GATE}
    return _without_defaults(data, _LATER_EVALUATION)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (pydantic models included)."""
    def plain(p: Any) -> Any:
        return p.model_dump(mode="json") if isinstance(p, BaseModel) else p

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_cache_key(recipe: Recipe, stage: StageBase, parent: str, data_version: str) -> str:
    """What a stage's result depends on: its section (monitoring settings left out), the model
    section, its parent version, the data version and the seed. Rank 0 and every follower
    rank of a launched stage use this one function."""
    return fingerprint(_stage_view(stage), _model_view(recipe.model), parent, data_version, recipe.seed)


def backbone_cache_key(recipe: Recipe, backbone: VisionBackbone | TextBackbone, data_version: str) -> str:
    """What a trained backbone depends on: its section, the data version and the seed."""
    section = {**backbone.model_dump(mode="json"), "train": _train_view(backbone.train)}
    return fingerprint(section, data_version, recipe.seed)


def evaluation_cache_key(recipe: Recipe, data_version: str) -> str:
    """What the default suite's scores of a version depend on (besides the version itself)."""
    return fingerprint(evaluation_view(recipe.evaluate), data_version)
