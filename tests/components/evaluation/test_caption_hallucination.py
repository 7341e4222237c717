"""CHAIR-style caption hallucination and the pooled hallucination rate."""

import pytest

from components.data.sample import Sample, assistant_turn, user_turn
from components.evaluation.caption_hallucination import (
    chair,
    hallucinated_mentions,
    mentioned_objects,
)
from components.evaluation.synthetic_suite import score_predictions

SCENE = [{"colour": "red", "shape": "square", "quadrant": "top left"},
         {"colour": "blue", "shape": "circle", "quadrant": "bottom right"}]


def test_mentions_with_and_without_colour():
    assert mentioned_objects("A red square and two circles, no Triangle.") == [
        ("red", "square"), (None, "circle"), (None, "triangle")]


def test_absent_pairs_and_absent_shapes_hallucinate():
    assert hallucinated_mentions("a red square at the top left and a blue circle.", SCENE) == []
    assert hallucinated_mentions("a blue square and a circle", SCENE) == ["blue square"]
    assert hallucinated_mentions("a triangle next to a red square", SCENE) == ["triangle"]


def test_chair_counts_captions_and_mentions():
    out = chair(["a red square.", "a green circle and a red square.", "a purple triangle."],
                [SCENE] * 3)
    assert out["chair_s"] == pytest.approx(2 / 3)
    assert out["chair_i"] == pytest.approx(2 / 4)
    assert out["recall"] == pytest.approx(2 / 6)  # the red square twice, the blue circle never
    assert chair(["nothing to see."], [SCENE]) == {"chair_s": 0.0, "chair_i": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="2 captions but 1"):
        chair(["a", "b"], [SCENE])


def _sample(key, task, question, answer, **extra):
    record = {"task": task, "messages": [user_turn(question, 1), assistant_turn(answer)],
              "answers": [answer], "objects": SCENE, **extra}
    return Sample(key, [], record)


def test_pooled_rate_counts_yes_to_absent_and_hallucinated_captions():
    samples = [
        _sample("c1", "caption", "Describe the image.", "a red square at the top left."),
        _sample("c2", "caption", "Describe the image.", "a red square at the top left."),
        _sample("e1", "vqa", "Is there a green circle?", "no", qtype="existence", absent=True),
        _sample("e2", "vqa", "Is there a green square?", "no", qtype="existence", absent=True),
        _sample("e3", "vqa", "Is there a red square?", "yes", qtype="existence", absent=False),
    ]
    preds = ["a red square.", "a yellow triangle.", "yes", "no", "yes"]
    result = score_predictions(samples, preds)
    m = result.metrics
    assert m["caption_hallucination_rate"] == pytest.approx(0.5)
    assert m["existence_hallucination_rate"] == pytest.approx(0.5)
    # probes: 2 absent-object questions + 2 captions; 1 yes + 1 hallucinated caption
    assert m["hallucination_rate"] == pytest.approx(0.5)
    assert [r.get("hallucinated") for r in result.rows[:2]] == [[], ["yellow triangle"]]


def test_text_accuracy_per_kind():
    samples = [_sample("t1", "text", "Repeat: red box", "red box", kind="repeat"),
               _sample("t2", "text", "Repeat: cat", "cat", kind="repeat"),
               _sample("t3", "text", "What is 2 + 2?", "4", kind="arithmetic")]
    m = score_predictions(samples, ["red box", "dog", "4"]).metrics
    assert (m["text_accuracy"], m["text_repeat_accuracy"], m["text_arithmetic_accuracy"]) == (
        pytest.approx(2 / 3), 0.5, 1.0)
