"""score_vqa / score_caption / score_mcq on small official-format inputs."""

from __future__ import annotations

import json
import shutil

import pytest

from components.evaluation import official_scoring
from components.evaluation.caption_metrics import caption_scores
from components.evaluation.official_formats import FormatError, MCQItem
from components.evaluation.official_scoring import (
    MissingJavaError,
    score_caption,
    score_mcq,
    score_vqa,
)

HAS_JAVA = shutil.which("java") is not None


def _ann(qid, answers, qtype="what color", atype="other", image_id=1):
    return {"question_id": qid, "image_id": image_id, "question_type": qtype, "answer_type": atype,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


# ------------------------------------------------------------------------------ VQA


def test_score_vqa_follows_vqaeval():
    anns = {"annotations": [
        _ann(1, ["yes"] * 10, "is the", "yes/no"),
        _ann(2, ["yes"] * 10, "is the", "yes/no"),
        _ann(3, ["2"] * 3 + ["3"] * 7, "how many", "number"),
        _ann(4, ["red"] * 9 + ["dark red"], "what color", "other"),
    ]}
    results = [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": "Yes"},  # unanimous ground truth: no normalisation -> 0
        {"question_id": 3, "answer": "two"},  # normalised to "2": (3 x 2/3 + 7 x 1) / 10 -> 0.9
        {"question_id": 4, "answer": "Red."},  # annotators disagree: normalised -> 1
    ]
    out = score_vqa(results, anns)
    assert out["perQuestion"] == {1: 100.0, 2: 0.0, 3: 90.0, 4: 100.0}
    assert out["perAnswerType"] == {"yes/no": 50.0, "number": 90.0, "other": 100.0}
    assert out["perQuestionType"] == {"is the": 50.0, "how many": 90.0, "what color": 100.0}
    assert out["overall"] == 72.5
    assert json.loads(json.dumps(out))["perQuestion"] == {"1": 100.0, "2": 0.0, "3": 90.0, "4": 100.0}


def test_score_vqa_on_textvqa_data():
    data = {"data": [
        {"question_id": 7, "image_id": "a", "question": "brand?", "answers": ["nokia"] * 9 + ["nokia phone"]},
        {"question_id": 8, "image_id": "b", "question": "word?", "answers": ["stop"] * 10},
    ]}
    out = score_vqa([{"question_id": 7, "answer": "Nokia Phone"},
                     {"question_id": 8, "answer": "stop"}], data)
    # leave-one-out over 10 distinct annotators: 9 x min(1, 1/3) + 1 x 0 -> 30
    assert out["perQuestion"] == {7: 30.0, 8: 100.0}
    assert out["perAnswerType"] == {"unknown": 65.0}


def test_score_vqa_cross_file_errors():
    anns = {"annotations": [_ann(1, ["a"] * 10), _ann(2, ["b"] * 10, image_id=5)]}
    both = [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}]
    with pytest.raises(FormatError, match="results: no result for question_id 2"):
        score_vqa(both[:1], anns)
    with pytest.raises(FormatError, match="results: result for unknown question_id 3"):
        score_vqa([*both, {"question_id": 3, "answer": "c"}], anns)
    with pytest.raises(FormatError, match="records 0 and 2: duplicate result for question_id 1"):
        score_vqa([*both, both[0]], anns)
    with pytest.raises(FormatError, match="results: record 1: missing 'question_id'"):
        score_vqa([both[0], {"answer": "b"}], anns)
    questions = {"questions": [{"question_id": 1, "image_id": 1, "question": "q"}]}
    with pytest.raises(FormatError, match="no question for annotated question_id 2"):
        score_vqa(both, anns, questions)
    questions["questions"].append({"question_id": 2, "image_id": 6, "question": "q"})
    with pytest.raises(FormatError, match="question_id 2 has image_id 6 but its annotation says 5"):
        score_vqa(both, anns, questions)
    questions["questions"][1]["image_id"] = 5
    assert score_vqa(both, anns, questions)["overall"] == 100.0


def test_score_vqa_checks_multiple_choice_answers():
    anns = {"annotations": [_ann(1, ["yes"] * 10)]}
    questions = {"task_type": "Multiple Choice", "questions": [
        {"question_id": 1, "image_id": 1, "question": "q", "multiple_choices": ["yes", "no"]}]}
    assert score_vqa([{"question_id": 1, "answer": "yes"}], anns, questions)["overall"] == 100.0
    with pytest.raises(ValueError, match="not one of the multiple choices"):
        score_vqa([{"question_id": 1, "answer": "maybe"}], anns, questions)


# ------------------------------------------------------------------------------ captions

CAPTIONS = {"annotations": [
    {"image_id": 1, "caption": "A man riding a wave on top of a surfboard."},
    {"image_id": 2, "caption": "Two giraffes standing next to each other in a field."},
    {"image_id": 3, "caption": "A plate of food with rice, beans and a fork."},
    {"image_id": 4, "caption": "A red double decker bus parked on the street."},
]}


@pytest.mark.skipif(not HAS_JAVA, reason="the official PTB tokenizer needs java")
def test_score_caption_scores_only_images_with_a_result():
    results = [{"image_id": i, "caption": CAPTIONS["annotations"][i - 1]["caption"].lower()}
               for i in (1, 2, 3)]
    out = score_caption(results, CAPTIONS, ["BLEU", "ROUGE_L", "CIDEr"])
    assert out["images"] == 3 and out["images_without_result"] == 1
    assert out["tokenizer"] == "PTBTokenizer"
    assert out["Bleu_4"] == pytest.approx(1.0, rel=1e-6)
    assert out["CIDEr"] == pytest.approx(10.0, rel=1e-6)  # IDF over the 3 scored images
    # the same numbers as scoring the three images alone
    subset = {i: [CAPTIONS["annotations"][i - 1]["caption"]] for i in (1, 2, 3)}
    alone = caption_scores({r["image_id"]: r["caption"] for r in results}, subset,
                           ["BLEU", "ROUGE_L", "CIDEr"])
    assert {k: out[k] for k in alone} == alone
    assert json.loads(json.dumps(out)) == out


def test_score_caption_input_errors():
    with pytest.raises(FormatError, match="result for unknown image_id 9"):
        score_caption([{"image_id": 9, "caption": "x"}], CAPTIONS, ["BLEU"])
    with pytest.raises(FormatError, match="duplicate caption result for image_id 1"):
        score_caption([{"image_id": 1, "caption": "x"}] * 2, CAPTIONS, ["BLEU"])
    with pytest.raises(FormatError, match="no captions to score"):
        score_caption([], CAPTIONS, ["BLEU"])


def test_score_caption_without_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(official_scoring.shutil, "which", lambda name: None)
    with pytest.raises(MissingJavaError, match="METEOR needs Java"):
        score_caption([{"image_id": 1, "caption": "a man"}], CAPTIONS)
    with pytest.raises(MissingJavaError, match="SPICE needs Java"):
        score_caption([{"image_id": 1, "caption": "a man"}], CAPTIONS, ["BLEU", "SPICE"])
    from components.evaluation import caption_metrics

    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    out = score_caption([{"image_id": 1, "caption": "a man"}], CAPTIONS, ["BLEU"])
    assert out["tokenizer"] == "simple_tokenize"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAVA, reason="METEOR needs java")
def test_score_caption_default_metrics_with_meteor():
    results = [{"image_id": a["image_id"], "caption": a["caption"]} for a in CAPTIONS["annotations"]]
    out = score_caption(results, CAPTIONS)
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(out)
    assert out["METEOR"] > 0.9


# ------------------------------------------------------------------------------ MCQ

ITEMS = [
    MCQItem(0, "Colour?", ("red", "blue"), 1),
    MCQItem(1, "Shape?", ("circle", "square", "star"), 2),
    MCQItem("x", "Animal?", ("cat", "dog", "bird", "fish"), 0),
    MCQItem("y", "Size?", ("big", "small"), 0),
]


def test_score_mcq_letters_and_free_text():
    preds = {0: "B", 1: "The answer is (C).", "x": "a cat", "y": "I don't know"}
    out = score_mcq(preds, ITEMS)
    assert out["correct"] == 3 and out["total"] == 4 and out["unparsed"] == 1
    assert out["accuracy"] == 75.0
    assert out["perItem"]["x"] == {"prediction": "A", "answer": "A", "correct": True}
    assert out["perItem"]["y"] == {"prediction": None, "answer": "A", "correct": False}
    in_order = score_mcq(["A", "c", "D", "A"], ITEMS)
    assert in_order["correct"] == 2 and in_order["unparsed"] == 0


def test_score_mcq_errors():
    with pytest.raises(FormatError, match="no result for id 'y'"):
        score_mcq({0: "B", 1: "C", "x": "A"}, ITEMS)
    with pytest.raises(FormatError, match="result for unknown id 'z'"):
        score_mcq({0: "B", 1: "C", "x": "A", "y": "A", "z": "A"}, ITEMS)
    with pytest.raises(FormatError, match="3 answers for 4 items"):
        score_mcq(["A", "B", "C"], ITEMS)
    with pytest.raises(FormatError, match="id 1: answer must be a string"):
        score_mcq(["A", 2, "C", "D"], ITEMS)
