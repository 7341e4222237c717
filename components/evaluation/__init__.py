"""Evaluation metrics: official VQA accuracy, caption scores, POPE-style yes/no, exact match."""

from components.evaluation.caption_metrics import caption_scores
from components.evaluation.exact_match import exact_match
from components.evaluation.vqa_metrics import evaluate_vqa, normalize_answer, vqa_accuracy
from components.evaluation.yes_no import yes_no_metrics

__all__ = [
    "caption_scores",
    "evaluate_vqa",
    "exact_match",
    "normalize_answer",
    "vqa_accuracy",
    "yes_no_metrics",
]
