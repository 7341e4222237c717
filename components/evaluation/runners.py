"""Run one benchmark suite on a model (no tracking): generate, then score. Official results
are scored by the very function `vlmforge score` runs (`score_files`), so both give the same
numbers. ``RUNNERS`` holds one runner per suite kind."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.shards import read_samples, split_shards
from components.data.version import DataVersion
from components.evaluation.official_scoring import score_files
from components.evaluation.suites import DATA_SUITES, SUITE_KINDS, JudgeSpec, SuiteSpec
from components.evaluation.synthetic_suite import evaluate_suite

IMAGE_CHUNK = 256  # official sets: images loaded this many prompts at a time


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
    return score_files(kind, results_path, annotations=spec.annotations, questions=spec.questions,
                       items=spec.items, metrics=spec.metrics)


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
    from components.data.synthetic.scenes import CAPTION_PROMPT
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


def run_pope(spec: SuiteSpec, model, encoder, data: DataVersion | None, *, max_new_tokens: int,
             batch_size: int) -> BenchmarkResult:
    """POPE on a question file of the published layout over an image folder (`questions` +
    `images`), else on the data's scenes with random / popular / adversarial negatives."""
    from components.evaluation.pope import evaluate_pope, select_images

    if spec.questions is not None:
        return _run_pope_file(spec, model, encoder, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    scenes = select_images(_split_samples(data, spec.split), spec.max_images, spec.seed)
    if not scenes:
        raise ValueError(f"data {data.version}: split {spec.split!r} has no scene samples "
                         "(records with 'objects') for POPE")
    suite = evaluate_pope(model, encoder, scenes, samplers=spec.samplers, template=spec.template,
                          seed=spec.seed, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return BenchmarkResult(suite.metrics, suite.rows)


def _run_pope_file(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                   batch_size: int) -> BenchmarkResult:
    from components.data.sample import user_turn
    from components.evaluation.official_formats import load_pope_questions
    from components.evaluation.yes_no import is_yes, yes_no_metrics

    questions = load_pope_questions(spec.questions)
    jobs = [([user_turn(q.text, 1)], q) for q in questions]
    preds = _generate_chunked(
        model, encoder, jobs,
        lambda q: [_load_rgb(Path(spec.images) / q.image, f"question_id {q.question_id!r}")],
        max_new_tokens=max_new_tokens, batch_size=batch_size)
    labels = [q.label for q in questions]
    rows = [{"key": str(q.question_id), "task": "pope", "question": q.text, "prediction": p,
             "answers": ["yes" if q.label else "no"], "score": float(is_yes(p) == q.label)}
            for q, p in zip(questions, preds, strict=True)]
    return BenchmarkResult(yes_no_metrics(preds, labels), rows)


def apply_judge(judge: JudgeSpec, rows: list[dict], cache_dir: str | Path) -> dict[str, float]:
    """LAVE ratings of the open-answer rows (captions are left to caption metrics): adds
    ``judge_rating`` to those rows, returns ``judge_score``/``judge_unparsed``/``judge_exact_match``."""
    from components.evaluation.judge import JudgeItem, judge_summary, make_judge
    judged = [r for r in rows if r.get("task") != "caption"]
    if not judged:
        return {}
    cache = judge.cache_dir or str(cache_dir)
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


RUNNERS = {  # suite kind -> runner; synthetic and pope read the recipe's data version
    "synthetic": run_synthetic,
    "pope": run_pope,
    "vqa": run_official_vqa,
    "caption": run_official_caption,
    "mcq": run_official_mcq,
}
if tuple(RUNNERS) != SUITE_KINDS:
    raise RuntimeError(f"suite runners {list(RUNNERS)} != SUITE_KINDS {list(SUITE_KINDS)}")


def run_benchmark(spec: SuiteSpec, model, encoder, data: DataVersion | None, *,
                  max_new_tokens: int, batch_size: int,
                  judge_cache: str | Path = "judge-cache") -> BenchmarkResult:
    """Generate and score one suite (no tracking)."""
    kw = {"max_new_tokens": spec.max_new_tokens or (4 if spec.kind == "pope" else max_new_tokens),
          "batch_size": batch_size}
    if spec.kind in DATA_SUITES:
        if data is None and spec.needs_data:
            raise ValueError(f"a {spec.kind} suite needs the recipe's data")
        result = RUNNERS[spec.kind](spec, model, encoder, data, **kw)
    else:
        result = RUNNERS[spec.kind](spec, model, encoder, **kw)
    if spec.judge is not None:
        result.metrics.update(apply_judge(spec.judge, result.rows, judge_cache))
    return result
