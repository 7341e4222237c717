"""Exact match after the official VQA answer normalization."""

from __future__ import annotations

from collections.abc import Sequence

from components.evaluation.vqa_metrics import normalize_answer

__all__ = ["exact_match"]


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized answer, else 0.0.

    Both sides go through :func:`normalize_answer` (unlike ``vqaEval.py``, which skips
    normalization when all ground-truth answers agree).
    """
    if isinstance(answers, str):
        answers = [answers]
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))
