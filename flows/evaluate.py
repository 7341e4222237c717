"""The evaluate stage: benchmark suites on a registered version, then the promotion gate that
moves `champion` only when the candidate is better.

Suites (`vlmforge evaluate --suite NAME`, repeatable):

* ``synthetic`` (the default; what the pipeline runs): the held-out synthetic suite, its
  metrics recorded unprefixed (``vqa_accuracy``, ...) and compared by the promotion gate;
* ``pope``: POPE-style object hallucination, random / popular / adversarial negatives;
* suites of a suite config (YAML, ``--suite-config``): ``synthetic`` with ``shots`` (k-shot
  prompts from a support split), ``pope`` with other settings, and official ``vqa`` /
  ``caption`` / ``mcq`` files. Official results are written in the official result format
  and scored by the very function `vlmforge score` runs, so both give the same numbers.

Every suite but the default records its metrics on the version prefixed with its name
(``pope_adversarial_f1``), where a gate may guard them. Per suite: one MLflow run (metrics,
a predictions table, official results), a Prefect markdown artifact, and a cache key on the
version so an unchanged suite is not rerun.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import registry
from components.data.shards import read_samples, split_shards
from components.evaluation.pope import SAMPLERS
from components.evaluation.pope import TEMPLATE as POPE_TEMPLATE
from components.evaluation.synthetic_suite import evaluate_suite
from components.recipe import Recipe, fingerprint
from components.training.batching import ChatEncoder
from flows.data import DataVersion
from flows.lineage import (
    log_data_inputs,
    log_predictions,
    markdown_table,
    publish_markdown,
    run_link,
)
from flows.models import load_version

DEFAULT_SUITE = "synthetic"
SUITE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
OFFICIAL_KINDS = ("vqa", "caption", "mcq")
ROWS_IN_SUMMARY = 10
IMAGE_CHUNK = 256  # official sets: images loaded this many prompts at a time


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JudgeSpec(_Strict):
    """A LAVE-style judge: a local ``AutoModelForCausalLM`` directory (``backend: local``) or
    a model behind an OpenAI-compatible endpoint (``backend: openai``, ``base_url``)."""

    backend: Literal["local", "openai"] = "local"
    model: str  # local: a model directory; openai: the endpoint's model name
    base_url: str | None = None  # openai: the API root, e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: env var holding the API key (optional)
    timeout_s: float = Field(60.0, gt=0)  # openai: per request
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
        return self


class SuiteSpec(_Strict):
    """One benchmark suite. Paths in a suite config file are relative to that file."""

    kind: Literal["synthetic", "pope", "vqa", "caption", "mcq"]
    split: str = "test"  # synthetic/pope: the data split asked about
    shots: int = Field(0, ge=0)  # synthetic: in-context examples per question
    support_split: str = "val"  # synthetic: where the shots come from
    seed: int = 0
    samplers: list[Literal["random", "popular", "adversarial"]] = Field(
        default_factory=lambda: list(SAMPLERS))
    template: str = POPE_TEMPLATE
    max_images: int | None = Field(None, gt=0)  # pope: scene images used (None: all)
    annotations: str | None = None  # vqa: VQAv2/OK-VQA/TextVQA; caption: COCO captions
    questions: str | None = None  # vqa: VQAv2 questions file (TextVQA carries its questions)
    items: str | None = None  # mcq: items JSONL
    images: str | None = None  # vqa/caption: the image folder
    image_file: str = "{image_id}.jpg"  # name of an image in `images` (COCO: its file_name)
    metrics: list[str] = Field(default_factory=lambda: ["BLEU", "ROUGE_L", "CIDEr"])
    mcq_answer: Literal["letter_logprob", "generate"] = "letter_logprob"
    max_new_tokens: int | None = Field(None, gt=0)  # default: the recipe's (pope: 4)
    judge: JudgeSpec | None = None  # synthetic/vqa: add a LAVE judge score

    @model_validator(mode="after")
    def _files_for_kind(self) -> SuiteSpec:
        needs = {"vqa": ("annotations", "images"), "caption": ("annotations", "images"),
                 "mcq": ("items",)}.get(self.kind, ())
        missing = [f for f in needs if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} suite needs {', '.join(missing)}")
        if self.judge is not None and self.kind not in ("synthetic", "vqa"):
            raise ValueError(f"a judge scores open answers: synthetic or vqa suites, not {self.kind}")
        if self.shots and self.kind != "synthetic":
            raise ValueError("shots apply to synthetic suites only")
        return self

    def resolve_paths(self, base: Path) -> SuiteSpec:
        """The spec with relative file paths made absolute against ``base``."""
        update = {}
        for name in ("annotations", "questions", "items", "images"):
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


def recipe_suites(recipe: Recipe) -> dict[str, SuiteSpec]:
    """Suites declared in the recipe's ``evaluate.suites``; relative paths are relative to the
    working directory."""
    raw = recipe.evaluate.suites
    return parse_suites(raw, f"recipe {recipe.name!r} evaluate.suites", Path.cwd()) if raw else {}


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "unknown"


# ---------------------------------------------------------------------------------- runners


@dataclass
class BenchmarkResult:
    """What a suite measured: metrics (unprefixed), one row per question, official results."""

    metrics: dict[str, float]
    rows: list[dict]
    results: list[dict] | None = None  # in the official result format (vqa, caption, mcq)


def score_official(kind: str, results_path: str | Path, spec: SuiteSpec) -> dict[str, Any]:
    """Score an official results file exactly as `vlmforge score <kind>` does (same function)."""
    import argparse

    from flows.score import score

    args = argparse.Namespace(kind=kind, results=str(results_path), annotations=spec.annotations,
                              questions=spec.questions, metrics=list(spec.metrics),
                              items=spec.items)
    return score(args)


def official_metrics(kind: str, scores: Mapping[str, Any]) -> dict[str, float]:
    """The MLflow metrics of an official score (percentages stay percentages)."""
    if kind == "vqa":
        out = {"accuracy": float(scores["overall"])}
        out.update({f"accuracy_{_slug(t)}": float(v) for t, v in scores["perAnswerType"].items()})
        return out
    if kind == "caption":
        return {_slug(k): float(v) for k, v in scores.items()
                if k not in ("images", "images_without_result", "tokenizer")
                and isinstance(v, int | float)}
    return {"accuracy": float(scores["accuracy"]), "unparsed": float(scores["unparsed"])}


def _image_path(folder: str, pattern: str, image_id: Any, what: str) -> Path:
    try:
        return Path(folder) / pattern.format(image_id=image_id)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{what}: image_file {pattern!r} does not fit image_id {image_id!r} "
                         f"({exc})") from exc


def _load_rgb(path: str | Path, what: str):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise ValueError(f"{what}: cannot open image {str(path)!r} ({exc})") from exc


def _generate_chunked(model, encoder, jobs: Sequence[tuple[list[dict], Any]], load, *,
                      max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers for (messages, image reference) jobs, images loaded chunk by chunk."""
    from components.evaluation.generate import generate_answers

    out: list[str] = []
    for start in range(0, len(jobs), IMAGE_CHUNK):
        chunk = jobs[start : start + IMAGE_CHUNK]
        prompts = [(messages, load(ref)) for messages, ref in chunk]
        out += generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                                batch_size=batch_size)
    return out


def _write_results(results: list[dict], folder: Path) -> Path:
    path = folder / "results.json"
    path.write_text(json.dumps(results, ensure_ascii=False))
    return path


def run_official_vqa(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                     batch_size: int) -> BenchmarkResult:
    from components.data.sample import user_turn
    from components.evaluation.official_formats import (
        FormatError,
        load_vqa_annotations,
        load_vqa_questions,
    )

    anns = load_vqa_annotations(spec.annotations)["annotations"]
    by_id = ({q["question_id"]: q for q in load_vqa_questions(spec.questions)["questions"]}
             if spec.questions else {})
    jobs, meta = [], []
    for ann in anns:
        qid = ann["question_id"]
        q = by_id.get(qid, ann)
        if not isinstance(q.get("question"), str) or q.get("image_id") is None:
            raise FormatError(f"{spec.annotations}: question_id {qid!r} has no question text and "
                              "image_id: give the suite a `questions` file")
        jobs.append(([user_turn(q["question"], 1)], (q["image_id"], f"question_id {qid!r}")))
        meta.append((qid, q["question"], list(dict.fromkeys(a["answer"] for a in ann["answers"]))))
    preds = _generate_chunked(
        model, encoder, jobs,
        lambda ref: [_load_rgb(_image_path(spec.images, spec.image_file, *ref), ref[1])],
        max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = [{"question_id": qid, "answer": p} for (qid, _, _), p in zip(meta, preds, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_official("vqa", _write_results(results, Path(tmp)), spec)
    per_q = {str(k): v for k, v in scores["perQuestion"].items()}
    rows = [{"key": str(qid), "task": "vqa", "question": text, "prediction": p, "answers": refs,
             "score": per_q[str(qid)] / 100} for (qid, text, refs), p in zip(meta, preds, strict=True)]
    return BenchmarkResult(official_metrics("vqa", scores), rows, results)


def run_official_caption(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                         batch_size: int) -> BenchmarkResult:
    from components.data.sample import user_turn
    from components.data.scenes import CAPTION_PROMPT
    from components.evaluation.official_formats import load_caption_annotations, read_json

    refs = load_caption_annotations(spec.annotations)
    raw = read_json(spec.annotations)
    file_names = {img["id"]: img["file_name"] for img in raw.get("images", [])
                  if isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)}
    ids = list(refs)

    def load(image_id):
        what = f"image_id {image_id!r}"
        path = (Path(spec.images) / file_names[image_id] if image_id in file_names
                else _image_path(spec.images, spec.image_file, image_id, what))
        return [_load_rgb(path, what)]

    jobs = [([user_turn(CAPTION_PROMPT, 1)], i) for i in ids]
    preds = _generate_chunked(model, encoder, jobs, load, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    results = [{"image_id": i, "caption": p} for i, p in zip(ids, preds, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_official("caption", _write_results(results, Path(tmp)), spec)
    rows = [{"key": str(i), "task": "caption", "question": CAPTION_PROMPT, "prediction": p,
             "answers": refs[i], "score": None} for i, p in zip(ids, preds, strict=True)]
    return BenchmarkResult(official_metrics("caption", scores), rows, results)


def run_official_mcq(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                     batch_size: int) -> BenchmarkResult:
    from components.evaluation.mcq import choose_options, mcq_messages
    from components.evaluation.official_formats import load_mcq_items

    items = load_mcq_items(spec.items)
    if spec.mcq_answer == "letter_logprob":
        preds = [s.letter for s in choose_options(model, encoder, items, batch_size=batch_size)]
    else:
        jobs = [(mcq_messages(it), it) for it in items]
        preds = _generate_chunked(
            model, encoder, jobs,
            lambda it: [_load_rgb(it.image, f"item {it.id!r}")] if it.image else [],
            max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = [{"id": it.id, "answer": p} for it, p in zip(items, preds, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_official("mcq", _write_results(results, Path(tmp)), spec)
    per_item = scores["perItem"]
    rows = [{"key": str(it.id), "task": "mcq", "question": it.question, "prediction": p,
             "answers": [it.answer_letter], "score": float(per_item[it.id]["correct"])}
            for it, p in zip(items, preds, strict=True)]
    return BenchmarkResult(official_metrics("mcq", scores), rows, results)


def _split_samples(data: DataVersion, split: str):
    shards = split_shards(data.shards, split)
    if not shards:
        raise ValueError(f"data {data.version}: no shards for split {split!r} in {data.shards}")
    return list(read_samples(shards))


def run_synthetic(spec: SuiteSpec, model, encoder, data: DataVersion, *, max_new_tokens: int,
                  batch_size: int) -> BenchmarkResult:
    from components.evaluation.fewshot import fewshot_prompts
    from components.evaluation.generate import generate_answers
    from components.evaluation.synthetic_suite import score_predictions

    samples = _split_samples(data, spec.split)
    if not spec.shots:
        suite = evaluate_suite(model, encoder, samples, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
        return BenchmarkResult(suite.metrics, suite.rows)
    tasks = {s.record["task"] for s in samples}
    support = [s for s in _split_samples(data, spec.support_split) if s.record["task"] in tasks]
    prompts = fewshot_prompts(samples, support, spec.shots, seed=spec.seed)
    preds = generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                             batch_size=batch_size)
    suite = score_predictions(samples, preds)
    return BenchmarkResult(suite.metrics, suite.rows)


def run_pope(spec: SuiteSpec, model, encoder, data: DataVersion, *, max_new_tokens: int,
             batch_size: int) -> BenchmarkResult:
    from components.evaluation.pope import evaluate_pope, select_images

    scenes = select_images(_split_samples(data, spec.split), spec.max_images, spec.seed)
    if not scenes:
        raise ValueError(f"data {data.version}: split {spec.split!r} has no scene samples "
                         "(records with 'objects') for POPE")
    suite = evaluate_pope(model, encoder, scenes, samplers=spec.samplers, template=spec.template,
                          seed=spec.seed, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return BenchmarkResult(suite.metrics, suite.rows)


def apply_judge(judge: JudgeSpec, rows: list[dict]) -> dict[str, float]:
    """LAVE ratings of the open-answer rows (captions are left to caption metrics): adds
    ``judge_rating`` to those rows, returns ``judge_score``/``judge_unparsed``/``judge_exact_match``."""
    from components.evaluation.judge import JudgeItem, judge_summary, make_judge
    from flows.environment import vlmforge_home

    judged = [r for r in rows if r.get("task") != "caption"]
    if not judged:
        return {}
    cache = judge.cache_dir or str(vlmforge_home() / "judge-cache")
    judge_model = make_judge(judge.backend, judge.model, base_url=judge.base_url,
                             api_key_env=judge.api_key_env, timeout_s=judge.timeout_s,
                             cache_dir=cache, max_new_tokens=judge.max_new_tokens,
                             batch_size=judge.batch_size,
                             exact_match_shortcut=judge.exact_match_shortcut)
    judgments = judge_model.judge([JudgeItem(r["question"], tuple(r["answers"]), r["prediction"])
                             for r in judged])
    for row, j in zip(judged, judgments, strict=True):
        row["judge_rating"] = j.rating
    return {f"judge_{k}": v for k, v in judge_summary(judgments).items()}


def run_benchmark(spec: SuiteSpec, model, encoder, data: DataVersion | None, *,
                  max_new_tokens: int, batch_size: int) -> BenchmarkResult:
    """Generate and score one suite (no tracking)."""
    kw = {"max_new_tokens": spec.max_new_tokens or (4 if spec.kind == "pope" else max_new_tokens),
          "batch_size": batch_size}
    if spec.kind in ("synthetic", "pope") and data is None:
        raise ValueError(f"a {spec.kind} suite needs the recipe's data")
    if spec.kind == "synthetic":
        result = run_synthetic(spec, model, encoder, data, **kw)
    elif spec.kind == "pope":
        result = run_pope(spec, model, encoder, data, **kw)
    else:
        runner = {"vqa": run_official_vqa, "caption": run_official_caption,
                  "mcq": run_official_mcq}[spec.kind]
        result = runner(spec, model, encoder, **kw)
    if spec.judge is not None:
        result.metrics.update(apply_judge(spec.judge, result.rows))
    return result


# ---------------------------------------------------------------------------------- tracking


@dataclass
class BenchmarkOutcome:
    suite: str
    run_id: str | None
    cached: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)  # prefixed, as on the version


@dataclass
class EvalOutcome:
    version: str
    run_id: str | None
    cached: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    promoted: bool = False
    champion: str | None = None
    reason: str = ""
    benchmarks: dict[str, BenchmarkOutcome] = field(default_factory=dict)


def _file_digests(spec: SuiteSpec) -> dict[str, str]:
    out = {}
    for name in ("annotations", "questions", "items"):
        path = getattr(spec, name)
        if path is not None and Path(path).is_file():
            out[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def summary_markdown(title: str, run_id: str | None, metrics: Mapping[str, float],
                     rows: Sequence[dict], note: str = "") -> str:
    """A benchmark's Prefect report: its metrics and its first predictions."""
    parts = [f"# {title}", f"MLflow run {run_link(run_id)}" + (f"; {note}" if note else "")]
    parts.append(markdown_table(["metric", "value"],
                                [[k, f"{v:.4f}"] for k, v in sorted(metrics.items())]))
    if rows:
        shown = rows[:ROWS_IN_SUMMARY]
        parts.append(f"## First {len(shown)} of {len(rows)} predictions")
        parts.append(markdown_table(
            ["key", "question", "prediction", "references", "score"],
            [[r.get("key", ""), r.get("question", ""), r.get("prediction", ""),
              " / ".join(map(str, r.get("answers", [])))[:80],
              "-" if r.get("score") is None else f"{r['score']:.2f}"] for r in shown]))
    return "\n\n".join(parts) + "\n"


def _log_rows(rows: list[dict], suite: str) -> None:
    import pandas as pd

    table = pd.DataFrame([{**r, "answers": " | ".join(map(str, r.get("answers", [])))}
                          for r in rows])
    registry.log_table(table, f"{suite}/predictions.json")


@task(name="evaluate-suite")
def evaluate_version(recipe: Recipe, version: str, data: DataVersion, parent_run_id: str | None,
                     force: bool, model_name: str | None = None) -> EvalOutcome:
    """The default held-out synthetic suite, metrics recorded unprefixed."""
    name = model_name or recipe.registered_model
    key = fingerprint(recipe.evaluate, data.version)
    info = registry.version_info(name, version)
    if not force and info["tags"].get("eval_key") == key:
        return EvalOutcome(version, info["tags"].get("eval_run_id"), True, 0.0,
                           _default_metrics(registry.read_metrics(name, version), info["tags"]))
    start = time.perf_counter()
    model, processor = load_version(name, version)  # the processor of its last training stage
    samples = list(read_samples(sorted((data.shards / "test").glob("*.tar"))))
    with registry.start_run("evaluate", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate", "model_version": version,
                                  "suite": DEFAULT_SUITE}) as run_id:
        log_data_inputs(data, run_id)
        registry.log_params({"evaluate": recipe.evaluate.model_dump(mode="json"),
                             "model": f"models:/{name}/{version}", "questions": len(samples)})
        suite = evaluate_suite(model, ChatEncoder(processor, recipe.model.max_length), samples,
                               max_new_tokens=recipe.evaluate.max_new_tokens,
                               batch_size=recipe.evaluate.batch_size)
        registry.log_metrics(suite.metrics)
        log_predictions(suite.rows, [s.images[0] if s.images else None for s in samples],
                        "test", recipe.evaluate.samples_to_log)
    registry.record_metrics(name, version, suite.metrics)
    registry.set_version_tags(name, version, {"eval_key": key, "eval_run_id": run_id})
    publish_markdown(f"evaluate-{name}-{DEFAULT_SUITE}",
                     summary_markdown(f"{name} v{version}: {DEFAULT_SUITE} suite "
                                      f"(data {data.version})", run_id, suite.metrics, suite.rows),
                     f"{DEFAULT_SUITE} suite of {name} v{version}")
    return EvalOutcome(version, run_id, False, time.perf_counter() - start, suite.metrics)


def _default_metrics(recorded: Mapping[str, float], tags: Mapping[str, str]) -> dict[str, float]:
    """The default suite's metrics among a version's recorded ones: all but those of the other
    suites scored on it (their names start with the suite's prefix)."""
    prefixes = tuple(metric_prefix(k.removeprefix("eval_key.")) for k in tags
                     if k.startswith("eval_key."))
    return {k: v for k, v in recorded.items() if not prefixes or not k.startswith(prefixes)}


@task(name="evaluate-benchmark")
def evaluate_benchmark(recipe: Recipe, suite: str, spec: SuiteSpec, model_name: str,
                       version: str, data: DataVersion | None, parent_run_id: str | None,
                       force: bool) -> BenchmarkOutcome:
    """One non-default suite: run, log to MLflow, record prefixed metrics, publish a report."""
    prefix = metric_prefix(suite)
    key = fingerprint(suite, spec, _file_digests(spec), recipe.evaluate,
                      data.version if data is not None else None)
    info = registry.version_info(model_name, version)
    if not force and info["tags"].get(f"eval_key.{suite}") == key:
        recorded = registry.read_metrics(model_name, version)
        return BenchmarkOutcome(suite, info["tags"].get(f"eval_run_id.{suite}"), True, 0.0,
                                {k: v for k, v in recorded.items() if k.startswith(prefix)})
    start = time.perf_counter()
    model, processor = load_version(model_name, version)
    encoder = ChatEncoder(processor, recipe.model.max_length)
    with registry.start_run(f"evaluate-{suite}", parent_run_id=parent_run_id,
                            tags={"stage": "evaluate", "model_version": version,
                                  "suite": suite}) as run_id:
        if data is not None and spec.kind in ("synthetic", "pope"):
            log_data_inputs(data, run_id)
        registry.log_params({"suite": {"name": suite, **spec.model_dump(mode="json")},
                             "model": f"models:/{model_name}/{version}"})
        result = run_benchmark(spec, model, encoder, data,
                               max_new_tokens=recipe.evaluate.max_new_tokens,
                               batch_size=recipe.evaluate.batch_size)
        metrics = {f"{prefix}{k}": v for k, v in result.metrics.items()}
        registry.log_metrics(metrics)
        registry.log_params({"questions": len(result.rows)})
        if result.rows:
            _log_rows(result.rows, suite)
        if result.results is not None:
            registry.log_dict(result.results, f"{suite}/results.json")
    registry.record_metrics(model_name, version, metrics)
    registry.set_version_tags(model_name, version, {f"eval_key.{suite}": key,
                                                    f"eval_run_id.{suite}": run_id})
    note = ("official results in the run's `" + f"{suite}/results.json`; "
            "`vlmforge score` gives the same numbers") if result.results is not None else ""
    publish_markdown(f"evaluate-{model_name}-{suite}",
                     summary_markdown(f"{model_name} v{version}: {suite} ({spec.kind})", run_id,
                                      metrics, result.rows, note),
                     f"{suite} suite of {model_name} v{version}")
    return BenchmarkOutcome(suite, run_id, False, time.perf_counter() - start, metrics)


@flow(name="evaluate")
def evaluate_flow(recipe: Recipe, version: str, data: DataVersion | None,
                  parent_run_id: str | None = None, force: bool = False,
                  suites: list[str] | None = None,
                  suite_specs: dict[str, SuiteSpec] | None = None,
                  model_name: str | None = None) -> EvalOutcome:
    """Score `version` on ``suites`` (default: the held-out synthetic suite); when the default
    suite is among them, gate the version against the champion."""
    logger = get_run_logger()
    name = model_name or recipe.registered_model
    specs = resolve_suites(suites, {**recipe_suites(recipe), **(suite_specs or {})})
    outcome: EvalOutcome | None = None
    if DEFAULT_SUITE in specs:
        if data is None:
            raise ValueError(f"the {DEFAULT_SUITE} suite needs the recipe's data")
        outcome = evaluate_version(recipe, version, data, parent_run_id, force, model_name=name)
    benchmarks = {s: evaluate_benchmark(recipe, s, spec, name, version, data, parent_run_id, force)
                  for s, spec in specs.items() if s != DEFAULT_SUITE}
    for b in benchmarks.values():
        logger.info("v%s %s: %s%s", version, b.suite,
                    ", ".join(f"{k}={v:.4g}" for k, v in sorted(b.metrics.items())),
                    " (recorded)" if b.cached else "")
    if outcome is None:
        merged = {k: v for b in benchmarks.values() for k, v in b.metrics.items()}
        outcome = EvalOutcome(version, None, all(b.cached for b in benchmarks.values()),
                              sum(b.seconds for b in benchmarks.values()), merged)
        outcome.reason = f"promotion gate not run: it compares the {DEFAULT_SUITE!r} suite"
    else:
        gate = registry.GateConfig(primary=recipe.evaluate.primary_metric,
                                   min_delta=recipe.evaluate.min_delta,
                                   guarded=recipe.evaluate.guarded)
        decision = registry.promote(name, version, None, gate)
        outcome.promoted, outcome.reason = decision.promote, decision.reason
    outcome.champion = registry.get_alias(name, "champion")
    outcome.benchmarks = benchmarks
    logger.info("v%s: %s (champion: v%s)", version, outcome.reason, outcome.champion)
    return outcome

