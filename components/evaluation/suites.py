"""Benchmark suites: what `vlmforge evaluate --suite NAME` and a recipe's `evaluate.suites`
can name, validated; built-ins are the held-out synthetic suite and POPE. Light (pydantic
only): the recipe schema validates its suites with it; ``runners.RUNNERS`` runs them.

Adding a suite kind: its name in ``SUITE_KINDS`` (and its files in `SuiteSpec`), its runner
in runners.py."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.evaluation.judge_http import check_base_url, check_key_env

SUITE_KINDS: tuple[str, ...] = ("synthetic", "pope", "vqa", "caption", "mcq")  # runners.RUNNERS
DATA_SUITES: tuple[str, ...] = ("synthetic", "pope")  # kinds that may read the recipe's data
DEFAULT_SUITE = "synthetic"
POPE_SAMPLERS: tuple[str, ...] = ("random", "popular", "adversarial")  # components.evaluation.pope
POPE_TEMPLATE = "Is there {object} in the image?"
SUITE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MCQ_FORMATS: tuple[str, ...] = ("jsonl", "mmbench", "scienceqa")  # mcq_formats.ITEM_FORMATS
SUPPORT_FILES = ("support_annotations", "support_questions", "support_images")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JudgeSpec(_Strict):
    """A LAVE-style judge: a local ``AutoModelForCausalLM`` directory (``backend: local``) or
    a model behind an OpenAI-compatible endpoint (``backend: openai``, ``base_url``: https, or
    http on a loopback host; ``api_key_env``: a ``VLMFORGE_JUDGE_*`` variable)."""

    backend: Literal["local", "openai"] = "local"
    model: str  # local: a model directory; openai: the endpoint's model name
    base_url: str | None = None  # openai: the API root, e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: VLMFORGE_JUDGE_* env var holding the API key
    timeout_s: float = Field(60.0, gt=0)  # openai: per request attempt
    max_attempts: int = Field(4, gt=0)  # openai: retries on 429 / 5xx / connection errors
    max_response_bytes: int = Field(1 << 20, gt=0)  # openai: a larger reply is refused
    deadline_s: float | None = Field(3600.0, gt=0)  # the whole judge run (None: none)
    max_calls: int | None = Field(None, ge=0)  # budget: new model calls per judge run
    max_tokens: int | None = Field(None, ge=0)  # budget: prompt + completion tokens per run
    price_per_1k_tokens: float = Field(0.0, ge=0)  # estimated cost in the judge record
    cache_dir: str | None = None  # default: $VLMFORGE_HOME/judge-cache
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(8, gt=0)  # openai: concurrent requests
    exact_match_shortcut: bool = True

    @model_validator(mode="after")
    def _backend_fields(self) -> JudgeSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("an openai judge needs a base_url")
        if self.backend == "local" and (self.base_url or self.api_key_env):
            raise ValueError("base_url and api_key_env apply to an openai judge only")
        if self.base_url:
            check_base_url(self.base_url)
        check_key_env(self.api_key_env)
        return self


class SuiteSpec(_Strict):
    """One benchmark suite. Paths in a suite config file are relative to that file."""

    kind: Literal[SUITE_KINDS]  # type: ignore[valid-type]
    split: str = "test"  # synthetic/pope: the data split asked about; mcq scienceqa: its split
    shots: int = Field(0, ge=0)  # synthetic/vqa/caption: in-context examples per question
    support_split: str = "val"  # synthetic: where the shots come from
    # vqa/caption with shots: the support file(s) shots come from, like `annotations` and
    # `questions`, and their image folder (default: `images`)
    support_annotations: str | None = None
    support_questions: str | None = None
    support_images: str | None = None
    seed: int = 0
    samplers: list[Literal[POPE_SAMPLERS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(POPE_SAMPLERS))
    template: str = POPE_TEMPLATE
    max_images: int | None = Field(None, gt=0)  # pope: scene images used (None: all)
    annotations: str | None = None  # vqa: VQAv2/OK-VQA/TextVQA; caption: COCO captions
    # vqa: VQAv2 questions file (TextVQA carries its questions); pope: a POPE question file
    # (JSONL: question_id, image, text, label) over `images`
    questions: str | None = None
    items: str | None = None  # mcq: items JSONL, MMBench TSV or ScienceQA problems.json
    items_format: Literal[MCQ_FORMATS] = "jsonl"  # type: ignore[valid-type]
    circular: bool = False  # mcq mmbench: CircularEval (right only if every rotation is)
    images: str | None = None  # vqa/caption: the image folder; scienceqa: <split>/<id>/ root
    image_file: str = "{image_id}.jpg"  # name of an image in `images` (COCO: its file_name)
    metrics: list[str] = Field(default_factory=lambda: ["BLEU", "ROUGE_L", "CIDEr"])
    mcq_answer: Literal["letter_logprob", "generate"] = "letter_logprob"
    max_new_tokens: int | None = Field(None, gt=0)  # default: the recipe's (pope: 4)
    judge: JudgeSpec | None = None  # synthetic/vqa: add a LAVE judge score

    @model_validator(mode="after")
    def _files_for_kind(self) -> SuiteSpec:
        needs = {"vqa": ("annotations", "images"), "caption": ("annotations", "images"),
                 "mcq": ("items",)}.get(self.kind, ())
        if self.kind == "pope" and (self.questions is None) != (self.images is None):
            raise ValueError("a POPE file suite needs both questions and images")
        missing = [f for f in needs if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} suite needs {', '.join(missing)}")
        if self.judge is not None and self.kind not in ("synthetic", "vqa"):
            raise ValueError(f"a judge scores open answers: synthetic or vqa suites, not {self.kind}")
        if self.shots and self.kind not in ("synthetic", "vqa", "caption"):
            raise ValueError("shots apply to synthetic, vqa and caption suites only")
        self._check_support()
        if self.items_format != "jsonl" and self.kind != "mcq":
            raise ValueError("items_format applies to mcq suites only")
        if self.items_format == "scienceqa" and self.images is None:
            raise ValueError("a scienceqa mcq suite needs images (the folder holding "
                             "<split>/<id>/image.png)")
        if self.circular and self.items_format != "mmbench":
            raise ValueError("circular applies to mcq suites with items_format mmbench only")
        return self

    def _check_support(self) -> None:
        given = [f for f in SUPPORT_FILES if getattr(self, f) is not None]
        if self.kind in ("vqa", "caption") and self.shots and self.support_annotations is None:
            raise ValueError(f"a {self.kind} suite with shots needs support_annotations (the "
                             "file the shots come from)")
        if given and not (self.kind in ("vqa", "caption") and self.shots):
            raise ValueError(f"{', '.join(given)} apply to vqa and caption suites with shots only")
        if self.support_questions is not None and self.kind != "vqa":
            raise ValueError("support_questions apply to vqa suites only")

    @property
    def needs_data(self) -> bool:
        """Whether the suite reads the recipe's data version (POPE does without a file)."""
        return self.kind == "synthetic" or (self.kind == "pope" and self.questions is None)

    def resolve_paths(self, base: Path) -> SuiteSpec:
        """The spec with relative file paths made absolute against ``base``."""
        update = {}
        for name in ("annotations", "questions", "items", "images", *SUPPORT_FILES):
            value = getattr(self, name)
            if value is not None and not Path(value).expanduser().is_absolute():
                update[name] = str((base / value).resolve())
        if self.judge is not None:
            paths = (("model", self.judge.model),) if self.judge.backend == "local" else ()
            judge = {k: (str((base / v).resolve()) if v and not Path(v).expanduser().is_absolute()
                         else v) for k, v in (*paths, ("cache_dir", self.judge.cache_dir))}
            update["judge"] = self.judge.model_copy(update=judge)
        return self.model_copy(update=update)


BUILTIN_SUITES: dict[str, SuiteSpec] = {
    DEFAULT_SUITE: SuiteSpec(kind="synthetic"),
    "pope": SuiteSpec(kind="pope"),
}


def parse_suites(raw: Any, source: str, base: Path) -> dict[str, SuiteSpec]:
    """Named suites from parsed YAML/JSON: ``{suites: {name: spec}}`` or ``{name: spec}``."""
    if isinstance(raw, Mapping) and set(raw) == {"suites"}:
        raw = raw["suites"]
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: must map suite names to suite settings")
    out: dict[str, SuiteSpec] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not SUITE_NAME.match(name):
            raise ValueError(f"{source}: suite name {name!r} must be lower case letters, digits "
                             "and _, starting with a letter (it prefixes the suite's metrics)")
        if name == DEFAULT_SUITE:
            raise ValueError(f"{source}: suite {name!r} is the built-in default suite; give yours "
                             "another name")
        try:
            out[name] = SuiteSpec.model_validate(spec).resolve_paths(base)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}"
                               for e in exc.errors())
            raise ValueError(f"{source}: suite {name!r}: {errors}") from None
    return out


def load_suite_config(path: str | Path) -> dict[str, SuiteSpec]:
    """Suites of a YAML file; relative paths in it are relative to its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read suite config ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({exc})") from exc
    return parse_suites(raw, str(path), path.resolve().parent)


def resolve_suites(names: Sequence[str] | None,
                   configured: Mapping[str, SuiteSpec] | None = None) -> dict[str, SuiteSpec]:
    """The specs of ``names`` (default: the default suite) from the built-ins and ``configured``."""
    known = {**BUILTIN_SUITES, **(configured or {})}
    names = list(dict.fromkeys(names or [DEFAULT_SUITE]))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; known: {sorted(known)} (define more in a "
                         "suite config)")
    return {n: known[n] for n in names}


def metric_prefix(suite: str) -> str:
    return "" if suite == DEFAULT_SUITE else f"{suite}_"
