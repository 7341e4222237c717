"""POPE-style yes/no metrics for object-existence (hallucination) probes."""

from __future__ import annotations

from collections.abc import Sequence

from components.evaluation.vqa_metrics import normalize_answer

__all__ = ["is_yes", "yes_no_metrics"]


def is_yes(prediction: str) -> bool:
    """True when the first word of the normalized prediction is ``yes`` ("Yes, a dog." too)."""
    words = normalize_answer(prediction).split()
    return bool(words) and words[0] == "yes"


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def yes_no_metrics(predictions: Sequence[str], labels: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1, yes_ratio and hallucination_rate, "yes" positive.

    ``labels[i]`` is True when the asked-about object is present. Anything not parsed as yes
    counts as no. ``hallucination_rate`` is the share of absent-object questions answered yes
    (the false-positive rate). A ratio with an empty denominator is 0.0.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no predictions to score")
    said_yes = [is_yes(p) for p in predictions]
    tp = sum(y and bool(t) for y, t in zip(said_yes, labels, strict=True))
    fp = sum(y and not t for y, t in zip(said_yes, labels, strict=True))
    fn = sum(not y and bool(t) for y, t in zip(said_yes, labels, strict=True))
    tn = len(labels) - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": (tp + fp) / len(labels),
        "hallucination_rate": _ratio(fp, fp + tn),
    }
