"""The synthetic suite scores any split: the val split's conversations become one question
each, typed and labelled like the test split's single questions."""

from __future__ import annotations

from components.data.sample import message_text
from components.data.synthetic.scenes import generate_vqa
from components.evaluation.synthetic_suite import as_questions, score_predictions


def test_a_conversation_becomes_one_typed_question_per_turn():
    conversations = [generate_vqa(0, i, "val") for i in range(20)]
    questions = as_questions(conversations)
    assert [q.record["qtype"] for q in questions] == [t for s in conversations for t in s.record["qtypes"]]
    assert len({q.key for q in questions}) == len(questions)
    for q in questions:
        user, answer = q.record["messages"]
        assert (user["role"], answer["role"]) == ("user", "assistant")
        assert q.record["answers"] == [message_text(answer).strip()]
        if q.record["qtype"] == "existence":
            assert q.record["absent"] == (q.record["answers"] == ["no"])
    assert {q.record["qtype"] for q in questions} >= {"colour", "existence"}


def test_a_test_record_is_kept_as_it_is():
    single = [generate_vqa(0, i, "test") for i in range(8)]
    assert as_questions(single) == single


def test_the_val_split_scores_like_the_test_split():
    questions = as_questions([generate_vqa(0, i, "val") for i in range(40)])
    right = score_predictions(questions, [q.record["answers"][0] for q in questions]).metrics
    assert right["vqa_accuracy"] == 1.0 and right["existence_hallucination_rate"] == 0.0
    always_yes = score_predictions(questions, ["yes"] * len(questions)).metrics
    assert always_yes["existence_hallucination_rate"] == 1.0
    assert always_yes["vqa_existence_accuracy"] < 1.0
