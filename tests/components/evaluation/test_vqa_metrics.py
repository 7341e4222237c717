"""Official VQA accuracy: hand-derived cases from vqaEval.py and a randomized comparison
against a transcription of its evaluate loop."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import re
import warnings
from fractions import Fraction

import pytest

from components.evaluation.vqa_metrics import (
    ARTICLES,
    CONTRACTIONS,
    MANUAL_MAP,
    PUNCT,
    evaluate_vqa,
    normalize_answer,
    round_py2,
    vqa_accuracy,
)


# --------------------------------------------------------------------------------------------
# REFERENCE IMPLEMENTATION, for tests only: GT-Vision-Lab/VQA
# PythonEvaluationTools/vqaEvaluation/vqaEval.py (master, a013f00) VQAEval.evaluate /
# processPunctuation / processDigitArticle / setAccuracy / setEvalQA, transcribed line by line
# to Python 3. vqaEval.py is Python 2 code, so round() is Python 2's (see py2_round); the
# inputs below are ASCII, where str.lower and \d agree between the two.
# Tables come from the module under test; their content is pinned by test_tables_*.
# --------------------------------------------------------------------------------------------
def py2_round(x: float, n: int) -> float:
    """Python 2 round(): the exact binary value, ties away from zero."""
    scaled = Fraction(x) * 10**n
    r = math.floor(abs(scaled) + Fraction(1, 2))
    return math.copysign(float(Fraction(r, 10**n)), x)


class ReferenceVQAEval:
    def __init__(self, annotations: dict, results: list, n: int = 2) -> None:
        self.n = n
        self.accuracy: dict = {}
        self.evalQA: dict = {}
        self.qa = {ann["question_id"]: ann for ann in annotations["annotations"]}
        self.resqa = {ann["question_id"]: ann for ann in results}
        self.quesIds = [ann["question_id"] for ann in annotations["annotations"]]
        self.contractions = dict(CONTRACTIONS)
        self.manualMap = dict(MANUAL_MAP)
        self.articles = list(ARTICLES)
        self.periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
        self.commaStrip = re.compile(r"(\d)(\,)(\d)")
        self.punct = list(PUNCT)

    def evaluate(self) -> None:
        quesIds = self.quesIds
        gts = {q: self.qa[q] for q in quesIds}
        res = {q: self.resqa[q] for q in quesIds}
        accQA, accQuesType, accAnsType = [], {}, {}
        for quesId in quesIds:
            for ansDic in gts[quesId]["answers"]:
                ansDic["answer"] = ansDic["answer"].replace("\n", " ")
                ansDic["answer"] = ansDic["answer"].replace("\t", " ")
                ansDic["answer"] = ansDic["answer"].strip()
            resAns = res[quesId]["answer"]
            resAns = resAns.replace("\n", " ")
            resAns = resAns.replace("\t", " ")
            resAns = resAns.strip()
            gtAcc = []
            gtAnswers = [ans["answer"] for ans in gts[quesId]["answers"]]
            if len(set(gtAnswers)) > 1:
                for ansDic in gts[quesId]["answers"]:
                    ansDic["answer"] = self.processPunctuation(ansDic["answer"])
                    ansDic["answer"] = self.processDigitArticle(ansDic["answer"])
                resAns = self.processPunctuation(resAns)
                resAns = self.processDigitArticle(resAns)
            for gtAnsDatum in gts[quesId]["answers"]:
                otherGTAns = [item for item in gts[quesId]["answers"] if item != gtAnsDatum]
                matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
                acc = min(1, float(len(matchingAns)) / 3)
                gtAcc.append(acc)
            quesType = gts[quesId]["question_type"]
            ansType = gts[quesId]["answer_type"]
            avgGTAcc = float(sum(gtAcc)) / len(gtAcc)
            accQA.append(avgGTAcc)
            accQuesType.setdefault(quesType, []).append(avgGTAcc)
            accAnsType.setdefault(ansType, []).append(avgGTAcc)
            self.evalQA[quesId] = py2_round(100 * avgGTAcc, self.n)
        self.accuracy["overall"] = py2_round(100 * float(sum(accQA)) / len(accQA), self.n)
        self.accuracy["perQuestionType"] = {
            t: py2_round(100 * float(sum(v)) / len(v), self.n) for t, v in accQuesType.items()
        }
        self.accuracy["perAnswerType"] = {
            t: py2_round(100 * float(sum(v)) / len(v), self.n) for t, v in accAnsType.items()
        }

    def processPunctuation(self, inText: str) -> str:
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (
                re.search(self.commaStrip, inText) is not None
            ):
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("", outText, re.UNICODE)  # sic: flag passed as count
        return outText

    def processDigitArticle(self, inText: str) -> str:
        outText = []
        for word in inText.lower().split():
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        return " ".join(outText)


# ------------------------------------------------------------------------------ helpers


def _ann(qid, answers, qtype="what is", atype="other", ids=True):
    rows = [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} if ids else {"answer": a}
        for i, a in enumerate(answers)
    ]
    return {"question_id": qid, "image_id": 1, "question_type": qtype, "answer_type": atype,
            "answers": rows}  # fmt: skip


def _evaluate(pairs, **kw):
    """pairs: [(prediction, gt answers)] -> evaluate_vqa output."""
    anns = {"annotations": [_ann(i, gts, **kw) for i, (_, gts) in enumerate(pairs)]}
    results = [{"question_id": i, "answer": p} for i, (p, _) in enumerate(pairs)]
    return evaluate_vqa(results, anns)


# ------------------------------------------------------------------------------ tables


def test_tables_are_the_official_ones() -> None:
    digest = hashlib.sha256(json.dumps(list(CONTRACTIONS.items())).encode()).hexdigest()
    # sha256 of vqaEval.py's contractions dict items, in order (120 entries).
    assert digest == "a3b7d35bdb6c2a66fd80906c0c407d778102ea862144226df7cf2dd78ca595e8"
    assert len(CONTRACTIONS) == 120
    assert MANUAL_MAP == {
        "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
        "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    }  # fmt: skip
    assert ARTICLES == ("a", "an", "the")
    assert "".join(PUNCT) == ';/[]"{}()=+\\_-><@`,?!'


# ------------------------------------------------------------------------------ normalization


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000", "1000"),  # commaStrip matches: every punct mark is deleted, not spaced
        ("2,5 kg.", "25 kg"),
        ("t-shirt, 1,2", "tshirt 12"),  # a digit,digit anywhere glues 't-shirt' together
        ("t-shirt", "t shirt"),
        ("yes.", "yes"),
        ("Yes!", "yes"),
        ("yes, there is a dog.", "yes there is dog"),
        ("it's", "it's"),  # the apostrophe is not in the punct list
        ("10:30", "10:30"),  # nor is the colon
        ("3.5", "3.5"),  # a period before a digit stays
        ("3.5.", "3.5"),
        (".5", ".5"),
        ("u.s.a.", "usa"),
        ("x" + "." * 40, "x" + "." * 8),  # re.UNICODE passed as count: only 32 removals
        ("red/blue", "red blue"),  # no space next to '/': replaced by a space
        ("red / blue", "red blue"),  # space next to '/': deleted
        ("left , right", "left right"),
        ("hot-dog!", "hot dog"),
        ("(a)", ""),
        ("two", "2"),
        ("Two Dogs", "2 dogs"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("a dog", "dog"),
        ("The cat", "cat"),
        ("an apple", "apple"),
        ("a", ""),
        ("dont", "don't"),
        ("Dont", "don't"),
        ("youre", "you're"),
        ("whats", "what's"),
        ("Im", "im"),  # the table's "Im" key can never match lower-cased text
        (" yes\n", "yes"),
        ("a\tdog", "dog"),
        ("\u0663,\u0664", "\u0663 \u0664"),  # Python 2 \d is ASCII: Arabic-Indic digits are not
        ("\u0130ZM\u0130R", "izmir"),  # Python 2 lower(): 'İ' -> 'i'
        ("\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c3"),  # no final-sigma rule
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# ------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize(
    ("n_match", "expected"),
    # leave-one-out mean of min(1, matches/3) over 10 annotators
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_partial_agreement(n_match: int, expected: float) -> None:
    gts = ["cat"] * n_match + ["dog"] * (10 - n_match)
    assert vqa_accuracy("cat", gts) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_normalizes_when_annotators_disagree() -> None:
    gts = ["2"] * 4 + ["Two"] * 2 + ["three"] * 4
    assert vqa_accuracy("two.", gts) == 1.0  # 'two.' -> '2' and the 'Two's -> '2' too
    assert vqa_accuracy("A Dog!", ["dog"] * 4 + ["cat"]) == 1.0
    assert vqa_accuracy("A Dog!", ["dog"] * 3 + ["cat"]) == 0.75  # (3 * 2/3 + 1) / 4
    assert vqa_accuracy("dont", ["don't"] * 4 + ["no"]) == 1.0


def test_vqa_accuracy_unanimous_ground_truth_is_not_normalized() -> None:
    # len(set(gtAnswers)) == 1: neither side is processed, only \n/\t -> space and strip().
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("2", ["two"] * 10) == 0.0
    # ...but one dissenting annotator switches processing on for everyone.
    assert vqa_accuracy("Yes.", ["yes"] * 9 + ["no"]) == 1.0


def test_vqa_accuracy_edge_sizes() -> None:
    assert vqa_accuracy("yes", ["yes"]) == 0.0  # one annotator: nothing left after leaving it out
    assert vqa_accuracy("yes", ["yes", "yes"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


# ------------------------------------------------------------------------------ evaluate_vqa


def test_evaluate_vqa_output_and_rounding() -> None:
    out = _evaluate(
        [("cat", ["cat"] + ["dog"] * 9), ("Two", ["2"] * 3 + ["3"] * 7), ("no", ["yes"] * 10)]
    )
    assert set(out) == {"overall", "perAnswerType", "perQuestionType", "perQuestion"}
    # round(100 * 0.3, 2): 30.000000000000004 -> 30.0; 0.9 -> 90.0
    assert out["perQuestion"] == {0: 30.0, 1: 90.0, 2: 0.0}
    assert out["overall"] == 40.0  # round(100 * 1.2 / 3, 2)
    assert out["perAnswerType"] == {"other": 40.0}
    assert out["perQuestionType"] == {"what is": 40.0}

    out = _evaluate([("x", ["x", "x", "y", "z"]), ("x", ["x"] * 10), ("y", ["z"] * 10)])
    # first: leave-one-out over 4 answers: (2 * 1/3 + 2 * 2/3) / 4 = 0.5
    assert out["perQuestion"] == {0: 50.0, 1: 100.0, 2: 0.0}
    assert out["overall"] == 50.0


def test_evaluate_vqa_rounds_overall_to_two_decimals() -> None:
    out = _evaluate([("cat", ["cat"] * 10), ("x", ["y"] * 10), ("x", ["y"] * 10)])
    assert out["overall"] == 33.33  # round(100 * 1 / 3, 2)
    out = _evaluate([("cat", ["cat"] * 10)] * 2 + [("cat", ["cat"] * 2 + ["dog"] * 8)])
    assert out["overall"] == 86.67  # round(100 * 2.6 / 3, 2)
    assert out["perQuestion"] == {0: 100.0, 1: 100.0, 2: 60.0}


def test_evaluate_vqa_rounds_exact_ties_like_python2() -> None:
    # 1 right out of 800: 100 * 1 / 800 == 0.125 exactly. vqaEval.py is Python 2 code, whose
    # round() sends ties away from zero (0.13); Python 3's round() would give 0.12.
    out = _evaluate([("yes", ["yes"] * 10)] + [("no", ["yes"] * 10)] * 799)
    assert out["overall"] == 0.13
    assert round(0.125, 2) == 0.12
    assert round_py2(0.125) == 0.13 and round_py2(2.675) == 2.67  # 2.675 is below the tie
    assert round_py2(-0.125) == -0.13


def test_evaluate_vqa_groups_by_question_and_answer_type() -> None:
    anns = {
        "annotations": [
            _ann(1, ["yes"] * 10, "is the", "yes/no"),
            _ann(2, ["no"] * 10, "is the", "yes/no"),
            _ann(3, ["2"] * 5 + ["3"] * 5, "how many", "number"),
            _ann(4, ["red"] * 10, "what color", "other"),
        ]
    }
    results = [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": "yes"},
        {"question_id": 3, "answer": "two"},
        {"question_id": 4, "answer": "red"},
    ]
    out = evaluate_vqa(results, anns)
    assert out["perQuestion"] == {1: 100.0, 2: 0.0, 3: 100.0, 4: 100.0}
    assert out["perAnswerType"] == {"yes/no": 50.0, "number": 100.0, "other": 100.0}
    assert out["perQuestionType"] == {"is the": 50.0, "how many": 100.0, "what color": 100.0}
    assert out["overall"] == 75.0


def test_evaluate_vqa_checks_results_like_load_res() -> None:
    anns = {"annotations": [_ann(1, ["yes"] * 10), _ann(2, ["no"] * 10)]}
    with pytest.raises(ValueError, match="do not correspond"):
        evaluate_vqa([{"question_id": 1, "answer": "yes"}], anns)  # missing question 2
    with pytest.raises(ValueError, match="do not correspond"):
        evaluate_vqa(
            [{"question_id": q, "answer": "yes"} for q in (1, 2, 3)], anns
        )  # unknown question 3
    with pytest.raises(ValueError, match="array"):
        evaluate_vqa({"question_id": 1, "answer": "yes"}, anns)  # type: ignore[arg-type]
    # duplicate predictions: the last one wins, as in VQA.createIndex
    dup = [{"question_id": 1, "answer": "no"}, {"question_id": 2, "answer": "no"},
           {"question_id": 1, "answer": "yes"}]  # fmt: skip
    assert evaluate_vqa(dup, anns)["overall"] == 100.0


def test_evaluate_vqa_multiple_choice_answers_must_be_choices() -> None:
    anns = {"annotations": [_ann(1, ["yes"] * 10)]}
    questions = {
        "task_type": "Multiple Choice",
        "questions": [{"question_id": 1, "multiple_choices": ["yes", "no"]}],
    }
    assert evaluate_vqa([{"question_id": 1, "answer": "yes"}], anns, questions)["overall"] == 100
    with pytest.raises(ValueError, match="multiple choices"):
        evaluate_vqa([{"question_id": 1, "answer": "maybe"}], anns, questions)
    open_ended = {**questions, "task_type": "Open-Ended"}
    assert evaluate_vqa([{"question_id": 1, "answer": "maybe"}], anns, open_ended)["overall"] == 0


def test_evaluate_vqa_leaves_out_equal_answer_dicts_together() -> None:
    # vqaEval.py leaves an answer out with `item != gtAnsDatum`, a dict comparison: answers
    # without a distinguishing answer_id are all left out at once.
    with pytest.warns(UserWarning, match="answer_id"):
        out = _evaluate([("yes", ["yes"] * 10)], ids=False)
    assert out["perQuestion"] == {0: 0.0}
    with pytest.warns(UserWarning):
        out = _evaluate([("yes", ["yes"] * 4 + ["no"] * 6)], ids=False)
    # leaving out a 'yes' drops all four (acc 0); leaving out a 'no' leaves 4 'yes' (acc 1)
    assert out["perQuestion"] == {0: 60.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _evaluate([("yes", ["yes"] * 10)])["perQuestion"] == {0: 100.0}


def test_evaluate_vqa_does_not_mutate_inputs() -> None:
    anns = {"annotations": [_ann(1, [" Two ", "2", "two."])]}
    results = [{"question_id": 1, "answer": " Two.\n"}]
    before = copy.deepcopy((anns, results))
    evaluate_vqa(results, anns)
    assert (anns, results) == before


def test_vqa_accuracy_agrees_with_evaluate_vqa() -> None:
    pairs = [("two", ["2", "2", "two", "3"]), ("Yes", ["yes"] * 10), ("cat", ["cat", "dog"] * 5)]
    out = _evaluate(pairs)
    for i, (pred, gts) in enumerate(pairs):
        assert out["perQuestion"][i] == round_py2(100 * vqa_accuracy(pred, gts))


# ------------------------------------------------------------------------------ vs. reference

_VOCAB = [
    "yes", "Yes", "yes.", "YES!", "no", "No.", "two", "2", "Two", "a dog", "the dog", "dog",
    "dont", "don't", "1,000", "1000", "3.5", "3.5.", "it's", "its", "none", "0", "zero",
    "red/blue", "red blue", " yes ", "yes\n", "\tno", "u.s.a.", "usa", "t-shirt", "t shirt",
    "(a)", "a", "", "Ten", "ONE", "e.g.", "what?!", "@home", "...", "1,2", "left , right",
    "im", "Im", "whats", "an apple", "black and white", "black, white", "10:30", "x" + "." * 40,
    "wont", "youll", "2 dogs", "two dogs", "c++", "a_b", "[x]", "{y}", "<z>", "x=y", "b\\s",
]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    text = rng.choice(_VOCAB)
    if rng.random() < 0.3:
        text += rng.choice(["", " ", ".", "!", "?", ",", " .", "\n", "\t", ";", "-", "/"])
        text += rng.choice(_VOCAB)
    return text


def _random_case(rng: random.Random) -> tuple[list[dict], dict]:
    anns, results = [], []
    for q in range(rng.randint(1, 10)):
        n = rng.choice([10] * 8 + [1, 2, 3, 4, 9, 11])
        if rng.random() < 0.35:
            texts = [_random_text(rng)] * n
        else:
            pool = [_random_text(rng) for _ in range(rng.randint(1, 4))]
            texts = [rng.choice(pool) for _ in range(n)]
        ann = _ann(q, texts, rng.choice(["what is", "how many"]), rng.choice(["number", "other"]),
                   ids=rng.random() < 0.85)  # fmt: skip
        anns.append(ann)
        pred = rng.choice(texts) if rng.random() < 0.6 else _random_text(rng)
        results.append({"question_id": q, "answer": pred})
    rng.shuffle(results)
    return results, {"annotations": anns}


def test_matches_transcribed_reference_on_random_inputs() -> None:
    rng = random.Random(20240531)
    for _ in range(500):
        results, anns = _random_case(rng)
        ref = ReferenceVQAEval(json.loads(json.dumps(anns)), json.loads(json.dumps(results)))
        ref.evaluate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = evaluate_vqa(results, anns)
        assert got["perQuestion"] == ref.evalQA
        assert got["overall"] == ref.accuracy["overall"]
        assert got["perQuestionType"] == ref.accuracy["perQuestionType"]
        assert got["perAnswerType"] == ref.accuracy["perAnswerType"]
        for ann in anns["annotations"]:
            if len({a["answer"].strip() for a in ann["answers"]}) > 1:
                for a in ann["answers"]:
                    cleaned = a["answer"].replace("\n", " ").replace("\t", " ").strip()
                    assert normalize_answer(a["answer"]) == ref.processDigitArticle(
                        ref.processPunctuation(cleaned)
                    )
