"""Score official result files the way the official tools do, with JSON-able outputs.

* :func:`score_vqa`: ``VQAEval`` accuracy (see :mod:`vqa_metrics`) for VQAv2, OK-VQA, TextVQA.
* :func:`score_caption`: ``COCOEvalCap`` metrics over the images that have a result (as
  ``COCOEvalCap`` does), with the PTB tokenizer when Java is present.
* :func:`score_mcq`: accuracy of option letters (free text is read with :func:`parse_choice`).
* :func:`score_files`: any of them from the files (`vlmforge score` and the official suites).
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.evaluation.caption_metrics import caption_scores
from components.evaluation.choice import parse_choice
from components.evaluation.official_formats import (
    FormatError,
    MCQItem,
    check_caption_annotations,
    check_caption_results,
    check_vqa_annotations,
    check_vqa_questions,
    check_vqa_results,
)
from components.evaluation.vqa_metrics import evaluate_vqa

__all__ = ["CAPTION_METRICS", "MissingJavaError", "score_caption", "score_files", "score_mcq",
           "score_vqa"]

CAPTION_METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
_NEEDS_JAVA = {"METEOR", "SPICE"}


class MissingJavaError(RuntimeError):
    """A metric runs a Java program and no ``java`` is on PATH."""


def _some(ids: Sequence[Hashable], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def _match_ids(got: Sequence[Hashable], expected: Sequence[Hashable], what: str,
               key: str, require_all: bool = True) -> None:
    known = set(expected)
    unknown = [i for i in got if i not in known]
    if unknown:
        raise FormatError(f"{what}: result for unknown {key} {_some(unknown)}")
    have = set(got)
    missing = [i for i in expected if i not in have]
    if require_all and missing:
        raise FormatError(f"{what}: no result for {key} {_some(missing)}")


def score_vqa(
    results: list[dict[str, Any]],
    annotations: dict[str, Any],
    questions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Official VQA accuracy: ``{"overall", "perAnswerType", "perQuestionType", "perQuestion"}``.

    Percentages rounded to 2 decimals, ``perQuestion`` keyed by question id. ``annotations``
    may be VQAv2/OK-VQA or TextVQA data; ``questions``, when given, must cover every annotated
    question (same image ids) and makes Multiple Choice answers be checked. Every annotated
    question needs exactly one result.
    """
    annotations = check_vqa_annotations(annotations)
    results = check_vqa_results(results)
    anns = annotations["annotations"]
    _match_ids([r["question_id"] for r in results], [a["question_id"] for a in anns],
               "results", "question_id")
    if questions is not None:
        check_vqa_questions(questions)
        by_id = {q["question_id"]: q for q in questions["questions"]}
        for ann in anns:
            q = by_id.get(ann["question_id"])
            if q is None:
                raise FormatError(f"questions: no question for annotated question_id "
                                  f"{ann['question_id']!r}")
            if "image_id" in ann and ann["image_id"] != q["image_id"]:
                raise FormatError(f"questions: question_id {ann['question_id']!r} has image_id "
                                  f"{q['image_id']!r} but its annotation says {ann['image_id']!r}")
    return evaluate_vqa(results, annotations, questions)


def score_caption(
    results: list[dict[str, Any]] | Mapping[Hashable, str],
    annotations: dict[str, Any] | Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = CAPTION_METRICS,
) -> dict[str, Any]:
    """COCO caption metrics (``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``).

    ``results``: ``[{"image_id", "caption"}]`` (or id -> caption); ``annotations``: the COCO
    captions dict (or id -> references). Like ``COCOEvalCap``, only images with a result are
    scored (CIDEr's IDF too); a result for an unannotated image is an error. Adds ``images``
    (scored), ``images_without_result`` and ``tokenizer``. Raises :class:`MissingJavaError`
    when a requested metric needs Java and none is on PATH.
    """
    preds = check_caption_results(results) if isinstance(results, list) else dict(results)
    refs = (check_caption_annotations(annotations) if "annotations" in annotations
            else {k: list(v) for k, v in annotations.items()})
    java = shutil.which("java") is not None
    needs_java = sorted(m for m in metrics if m.upper() in _NEEDS_JAVA)
    if needs_java and not java:
        raise MissingJavaError(f"{', '.join(needs_java)} needs Java (pycocoevalcap runs a .jar) and "
                               "no `java` is on PATH: install a JRE or leave the metric out")
    _match_ids(list(preds), list(refs), "results", "image_id", require_all=False)
    if not preds:
        raise FormatError("results: no captions to score")
    scores: dict[str, Any] = caption_scores(preds, {k: refs[k] for k in preds}, metrics)
    scores.update(images=len(preds), images_without_result=len(refs) - len(preds),
                  tokenizer="PTBTokenizer" if java else "simple_tokenize")
    return scores


def score_mcq(
    predictions: Mapping[Hashable, str] | Sequence[str],
    items: Sequence[MCQItem],
    *,
    circular: bool = False,
    grouped: bool = False,
) -> dict[str, Any]:
    """Accuracy (percent) of option-letter predictions: ``{"accuracy", "correct", "total",
    "unparsed", "perItem"}``.

    ``predictions`` maps item ids to answers, or lists them in item order. An answer that is
    not a bare letter is read with :func:`parse_choice` (option texts included); one that
    cannot be read counts as wrong and in ``unparsed``. Every item needs a prediction.
    ``circular`` (items from :func:`~components.evaluation.mcq_formats.circular_items`): a
    question counts only when all its rotations are right; adds ``rotations`` (their own
    accuracy) and ``perQuestion``. ``grouped`` adds ``perCategory`` and ``perModality``
    (``image`` / ``text_only``) over the questions.
    """
    if not items:
        raise FormatError("items: no items to score")
    if isinstance(predictions, Mapping):
        _match_ids(list(predictions), [it.id for it in items], "predictions", "id")
        answers = [predictions[it.id] for it in items]
    else:
        if len(predictions) != len(items):
            raise FormatError(f"predictions: {len(predictions)} answers for {len(items)} items")
        answers = list(predictions)
    per_item, correct, unparsed = {}, 0, 0
    for item, answer in zip(items, answers, strict=True):
        if not isinstance(answer, str):
            raise FormatError(f"predictions: id {item.id!r}: answer must be a string, got {answer!r}")
        choice = parse_choice(answer, len(item.options), item.options)
        unparsed += choice is None
        ok = choice == item.answer_letter
        correct += ok
        per_item[item.id] = {"prediction": choice, "answer": item.answer_letter, "correct": ok}
    out = {"accuracy": 100 * correct / len(items), "correct": correct, "total": len(items),
           "unparsed": unparsed, "perItem": per_item}
    questions = [(it, per_item[it.id]["correct"]) for it in items]
    if circular:
        questions = _circular_questions(items, per_item)
        out = {**_share(questions), "unparsed": unparsed,
               "rotations": {k: out[k] for k in ("accuracy", "correct", "total")},
               "perItem": per_item, "perQuestion": {it.id: ok for it, ok in questions}}
    if grouped:
        out["perCategory"] = _groups(questions, lambda it: it.category)
        out["perModality"] = _groups(questions, lambda it: "image" if it.image else "text_only")
    return out


def _share(questions: Sequence[tuple[MCQItem, bool]]) -> dict[str, Any]:
    correct = sum(ok for _, ok in questions)
    return {"accuracy": 100 * correct / len(questions), "correct": correct, "total": len(questions)}


def _groups(questions: Sequence[tuple[MCQItem, bool]], group) -> dict[str, dict[str, Any]]:
    by: dict[str, list] = {}
    for it, ok in questions:
        if group(it) is not None:
            by.setdefault(group(it), []).append((it, ok))
    return {name: _share(qs) for name, qs in by.items()}


def _circular_questions(items: Sequence[MCQItem], per_item: Mapping) -> list[tuple[MCQItem, bool]]:
    """(question, all rotations right) per question; rotations share ``id % CIRCULAR_OFFSET``
    and the question is the rotation whose id is below it."""
    from components.evaluation.mcq_formats import CIRCULAR_OFFSET

    rights: dict[int, list[bool]] = {}
    base: dict[int, MCQItem] = {}
    for it in items:
        if isinstance(it.id, bool) or not isinstance(it.id, int) or it.id < 0:
            raise FormatError(f"items: id {it.id!r}: circular scoring needs non-negative integer ids")
        rights.setdefault(it.id % CIRCULAR_OFFSET, []).append(per_item[it.id]["correct"])
        if it.id < CIRCULAR_OFFSET:
            base[it.id] = it
    lacking = [q for q in rights if q not in base]
    if lacking:
        raise FormatError(f"items: rotations of question {_some(lacking)} without the question")
    return [(base[q], all(oks)) for q, oks in rights.items()]


SCORED_KINDS = ("vqa", "caption", "mcq")


def score_files(kind: str, results: str | Path, *, annotations: str | Path | None = None,
                questions: str | Path | None = None, items: str | Path | None = None,
                metrics: Sequence[str] = CAPTION_METRICS, items_format: str = "jsonl",
                images: str | Path | None = None, split: str = "test",
                circular: bool = False) -> dict[str, Any]:
    """Score an official results file of ``kind`` from its files: what `vlmforge score` prints
    and what every official suite records, so both give the same numbers. MCQ ``items`` are
    read by :func:`~components.evaluation.mcq_formats.load_mcq_file` (``items_format``,
    ``images``, ``split``, ``circular``); MMBench and ScienceQA get per-group scores."""
    from components.evaluation import official_formats as f

    if kind == "vqa":
        return score_vqa(f.load_vqa_results(results), f.load_vqa_annotations(annotations),
                         f.load_vqa_questions(questions) if questions else None)
    if kind == "caption":
        return score_caption(f.load_caption_results(results), f.load_caption_annotations(annotations),
                             list(metrics))
    if kind == "mcq":
        from components.evaluation.mcq_formats import load_mcq_file

        mcq_items = load_mcq_file(items, items_format, images=images, split=split, circular=circular)
        return score_mcq(f.load_mcq_results(results), mcq_items, circular=circular,
                         grouped=items_format != "jsonl")
    raise ValueError(f"unknown result kind {kind!r}; expected one of {list(SCORED_KINDS)}")
