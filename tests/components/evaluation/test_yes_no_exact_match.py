"""POPE-style yes/no metrics and normalized exact match."""

from __future__ import annotations

import pytest

from components.evaluation.exact_match import exact_match
from components.evaluation.yes_no import is_yes, yes_no_metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [("yes", True), ("Yes.", True), (" YES! there is", True), ("Yes, a dog.", True),
     ("no", False), ("No, there is not.", False), ("yesterday", False), ("", False),
     ("I think yes", False), ("yes-no", True)],
)  # fmt: skip
def test_is_yes_reads_the_normalized_first_word(text: str, expected: bool) -> None:
    assert is_yes(text) is expected


def test_yes_no_metrics_hand_computed() -> None:
    preds = ["yes", "Yes.", "no", "yes", "No", "no", "yes, it is", "nope"]
    labels = [True, True, True, False, False, False, False, True]
    # said yes: 1 1 0 1 0 0 1 0 -> TP=2 (0,1), FP=2 (3,6), FN=2 (2,7), TN=2 (4,5)
    m = yes_no_metrics(preds, labels)
    assert m == pytest.approx(
        {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5,
         "hallucination_rate": 0.5}  # fmt: skip
    )

    preds = ["yes", "yes", "yes", "no", "no"]
    labels = [True, True, False, True, False]
    # TP=2, FP=1, FN=1, TN=1
    m = yes_no_metrics(preds, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 5)
    assert m["hallucination_rate"] == pytest.approx(1 / 2)


def test_yes_no_metrics_degenerate_cases() -> None:
    m = yes_no_metrics(["no", "no"], [True, True])  # never says yes, no absent objects
    assert m == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0,
                 "hallucination_rate": 0.0}  # fmt: skip
    m = yes_no_metrics(["yes", "yes"], [False, False])
    assert m["hallucination_rate"] == 1.0 and m["accuracy"] == 0.0
    with pytest.raises(ValueError):
        yes_no_metrics(["yes"], [True, False])
    with pytest.raises(ValueError):
        yes_no_metrics([], [])


def test_exact_match_normalizes_both_sides() -> None:
    assert exact_match("Two dogs.", ["2 dogs"]) == 1.0
    assert exact_match("2 dogs", ["two Dogs!"]) == 1.0
    assert exact_match("the red ball", ["red ball", "ball"]) == 1.0
    assert exact_match("dont", "don't") == 1.0
    assert exact_match("1,000", ["1000"]) == 1.0
    assert exact_match("red", ["blue", "green"]) == 0.0
    assert exact_match("red", []) == 0.0
    assert exact_match("Yes", ["yes"] * 10) == 1.0  # unlike vqa_accuracy's unanimous quirk
