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

from components.data.decoded import cached_samples
from components.data.shards import split_shards
from components.data.version import DataVersion
from components.evaluation.official_scoring import score_files
from components.evaluation.suites import DATA_SUITES, SUITE_KINDS, JudgeSpec, SuiteSpec
from components.evaluation.synthetic_suite import as_questions, evaluate_suite

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
    judge_record: Any = None  # judge_records.JudgeRecord of a judged suite


def score_official(kind: str, results_path: str | Path, spec: SuiteSpec) -> dict[str, Any]:
    """Score an official results file exactly as `vlmforge score <kind>` does (same function)."""
    return score_files(kind, results_path, annotations=spec.annotations, questions=spec.questions,
                       items=spec.items, metrics=spec.metrics, items_format=spec.items_format,
                       images=spec.images, split=spec.split, circular=spec.circular)


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
    out = {"accuracy": float(scores["accuracy"]), "unparsed": float(scores["unparsed"])}
    if "rotations" in scores:  # MMBench CircularEval: each rotation on its own
        out["rotation_accuracy"] = float(scores["rotations"]["accuracy"])
    out.update({f"accuracy_{_slug(c).lower()}": float(v["accuracy"])
                for c, v in scores.get("perCategory", {}).items()})
    for modality, v in scores.get("perModality", {}).items():  # image / text_only
        out.update({f"{modality}_accuracy": float(v["accuracy"]), f"{modality}_items": float(v["total"])})
    return out


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
                      max_new_tokens: int, batch_size: int, images_per_job: int = 1) -> list[str]:
    """Greedy answers for (messages, image reference) jobs, images loaded chunk by chunk."""
    from components.evaluation.generate import generate_answers

    out: list[str] = []
    step = max(1, IMAGE_CHUNK // images_per_job)
    for start in range(0, len(jobs), step):
        chunk = jobs[start : start + step]
        prompts = [(messages, load(ref)) for messages, ref in chunk]
        out += generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                                batch_size=batch_size)
    return out


def _support(spec: SuiteSpec):
    """The few-shot support set of an official vqa/caption suite, or None without shots."""
    from components.evaluation.official_fewshot import caption_support, vqa_support

    if not spec.shots:
        return None
    images = spec.support_images or spec.images
    if spec.kind == "vqa":
        return vqa_support(spec.support_annotations, spec.support_questions, images,
                           spec.image_file, spec.shots, seed=spec.seed)
    return caption_support(spec.support_annotations, images, spec.image_file, spec.shots,
                           seed=spec.seed)


def _with_shots(support, key, turn: dict) -> tuple[list[dict], list]:
    """The query's messages (after its k shots' turns) and the shots' image files."""
    return support.prompt(key, turn) if support is not None else ([turn], [])


def _write_results(results: list[dict], folder: Path) -> Path:
    path = folder / "results.json"
    path.write_text(json.dumps(results, ensure_ascii=False))
    return path


def run_official_vqa(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                     batch_size: int) -> BenchmarkResult:
    from components.data.sample import user_turn
    from components.evaluation.official_formats import vqa_questions

    support = _support(spec)
    jobs, meta = [], []
    for qid, q, ann in vqa_questions(spec.annotations, spec.questions):
        messages, shots = _with_shots(support, qid, user_turn(q["question"], 1))
        jobs.append((messages, (q["image_id"], f"question_id {qid!r}", shots)))
        meta.append((qid, q["question"], list(dict.fromkeys(a["answer"] for a in ann["answers"]))))
    preds = _generate_chunked(
        model, encoder, jobs,
        lambda ref: [*(_load_rgb(f, "support shot") for f in ref[2]),
                     _load_rgb(_image_path(spec.images, spec.image_file, *ref[:2]), ref[1])],
        max_new_tokens=max_new_tokens, batch_size=batch_size, images_per_job=spec.shots + 1)
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
    support = _support(spec)

    def load(ref):
        image_id, shots = ref
        what = f"image_id {image_id!r}"
        path = (Path(spec.images) / file_names[image_id] if image_id in file_names
                else _image_path(spec.images, spec.image_file, image_id, what))
        return [*(_load_rgb(f, "support shot") for f in shots), _load_rgb(path, what)]

    jobs = []
    for i in ids:
        messages, shots = _with_shots(support, i, user_turn(CAPTION_PROMPT, 1))
        jobs.append((messages, (i, shots)))
    preds = _generate_chunked(model, encoder, jobs, load, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, images_per_job=spec.shots + 1)
    results = [{"image_id": i, "caption": p} for i, p in zip(ids, preds, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_official("caption", _write_results(results, Path(tmp)), spec)
    rows = [{"key": str(i), "task": "caption", "question": CAPTION_PROMPT, "prediction": p,
             "answers": refs[i], "score": None} for i, p in zip(ids, preds, strict=True)]
    return BenchmarkResult(official_metrics("caption", scores), rows, results)


def run_official_mcq(spec: SuiteSpec, model, encoder, *, max_new_tokens: int,
                     batch_size: int) -> BenchmarkResult:
    from components.evaluation.mcq import choose_options, item_images, mcq_messages
    from components.evaluation.mcq_formats import load_mcq_file

    items = load_mcq_file(spec.items, spec.items_format, images=spec.images, split=spec.split,
                          circular=spec.circular)
    if spec.mcq_answer == "letter_logprob":
        preds = [s.letter for s in choose_options(model, encoder, items, batch_size=batch_size)]
    else:
        jobs = [(mcq_messages(it), it) for it in items]
        preds = _generate_chunked(model, encoder, jobs, item_images,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = [{"id": it.id, "answer": p} for it, p in zip(items, preds, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        scores = score_official("mcq", _write_results(results, Path(tmp)), spec)
    per_item = scores["perItem"]
    rows = [{"key": str(it.id), "task": "mcq", "question": it.question, "prediction": p,
             "answers": [it.answer_letter], "score": float(per_item[it.id]["correct"])}
            for it, p in zip(items, preds, strict=True)]
    if spec.circular:  # one row per question: its rotations' predictions and answers
        rows = _circular_rows(rows, scores["perQuestion"])
    return BenchmarkResult(official_metrics("mcq", scores), rows, results)


def _circular_rows(rows: list[dict], per_question: Mapping) -> list[dict]:
    from components.evaluation.mcq_formats import CIRCULAR_OFFSET

    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(int(row["key"]) % CIRCULAR_OFFSET, []).append(row)
    return [{**rs[0], "key": str(q), "prediction": "/".join(r["prediction"] for r in rs),
             "answers": ["/".join(r["answers"][0] for r in rs)],
             "score": float(per_question[q])} for q, rs in grouped.items()]


def _split_samples(data: DataVersion, split: str):
    shards = split_shards(data.shards, split)
    if not shards:
        raise ValueError(f"data {data.version}: no shards for split {split!r} in {data.shards}")
    return list(cached_samples(shards))


def run_synthetic(spec: SuiteSpec, model, encoder, data: DataVersion, *, max_new_tokens: int,
                  batch_size: int) -> BenchmarkResult:
    from components.evaluation.answer_nll import text_answer_nll
    from components.evaluation.fewshot import fewshot_prompts
    from components.evaluation.generate import generate_answers
    from components.evaluation.synthetic_suite import score_predictions

    samples = as_questions(_split_samples(data, spec.split))
    if not spec.shots:  # as the default suite: text-only retention as a likelihood too
        suite = evaluate_suite(model, encoder, samples, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
        nll = text_answer_nll(model, encoder, samples, batch_size=batch_size)
        return BenchmarkResult({**suite.metrics, **nll}, suite.rows)
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
    ``judge_rating`` to those rows, returns the ``judge_*`` metrics (the record:
    judge_records.judge_rows)."""
    from components.evaluation.judge_records import judge_rows

    return judge_rows(judge, rows, cache_dir)[0]


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
        from components.evaluation.judge_records import judge_rows

        metrics, result.judge_record = judge_rows(spec.judge, result.rows, judge_cache)
        result.metrics.update(metrics)
    return result
