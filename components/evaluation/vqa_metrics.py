"""Official VQA accuracy, reimplemented from GT-Vision-Lab/VQA ``vqaEval.py``.

Mirrors ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at master (commit a013f00, a
Python 2 script) and the checks of ``vqaTools/vqa.py::VQA.loadRes``, quirks included:

* ground-truth and predicted answers get ``\\n``/``\\t`` -> space and ``strip()`` always, but
  punctuation / digit / article / contraction processing only when the (stripped) ground-truth
  answers of a question are not all identical (``len(set(gtAnswers)) > 1``); with a unanimous
  ground truth the raw prediction must match exactly (case and punctuation included);
* ``processPunctuation`` looks at the *original* text to decide between deleting a punctuation
  mark and replacing it by a space, and deletes all of them as soon as a ``digit,digit`` occurs
  anywhere; ``'`` and ``:`` are not in the list;
* ``periodStrip`` is ``(?!<=\\d)(\\.)(?!\\d)`` (a mistyped look-behind, so in effect any
  ``.`` not followed by a digit is removed) and ``re.UNICODE`` is passed as the *count*
  argument of ``sub``: at most 32 periods are removed and ``\\d`` means ``[0-9]`` (Python 2
  without the flag);
* each annotator answer is left out in turn, but "left out" compares whole answer dicts, so
  equal dicts (e.g. no ``answer_id``) are all left out together;
* lower-casing is Python 2's per-character ``unicode.lower`` (no final-sigma rule);
* accuracies are on a 0-100 scale, rounded to 2 decimals with Python 2 ``round`` (exact
  value, ties away from zero); ``overall`` is ``100 * sum / n`` in that order.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["evaluate_vqa", "normalize_answer", "vqa_accuracy"]

# Tables copied verbatim from vqaEval.py (keys such as "Im" or "Id've" can never match, since
# the text is lower-cased first; kept for fidelity).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: tuple[str, ...] = ("a", "an", "the")
PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)
# re.ASCII: the official patterns are Python 2 byte strings compiled without re.UNICODE.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
_PERIOD_STRIP_COUNT = 32  # vqaEval.py passes re.UNICODE (== 32) as sub()'s count
_PRECISION = 2  # VQAEval(n=2)


def _clean(text: str) -> str:
    """Newlines and tabs to spaces, then strip (applied to every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``."""
    out = text
    drop_all = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if p + " " in text or " " + p in text or drop_all:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _lower_py2(text: str) -> str:
    """Python 2 ``unicode.lower``: simple per-character mapping (no final sigma, 'İ' -> 'i')."""
    if text.isascii():
        return text.lower()
    return "".join("i" if c == "\u0130" else c.lower() for c in text)


def process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower-case, number words to digits, drop articles,
    restore contractions."""
    words = [MANUAL_MAP.get(w, w) for w in _lower_py2(text).split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The processing a predicted answer gets: clean, ``processPunctuation``,
    ``processDigitArticle``."""
    return process_digit_article(process_punctuation(_clean(text)))


def round_py2(value: float, ndigits: int = _PRECISION) -> float:
    """Python 2 ``round``: the exact binary value rounded, ties away from zero."""
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def _answer_accuracy(prediction: str, answers: Sequence[Mapping[str, Any]]) -> tuple[float, bool]:
    """One question's accuracy in [0, 1] from answer dicts, and whether some left-out step
    dropped more than one equal dict."""
    if not answers:
        raise ValueError("a question needs at least one ground-truth answer")
    gts = [{**a, "answer": _clean(a["answer"])} for a in answers]
    res = _clean(prediction)
    if len({a["answer"] for a in gts}) > 1:
        for a in gts:
            a["answer"] = process_digit_article(process_punctuation(a["answer"]))
        res = process_digit_article(process_punctuation(res))
    accs: list[float] = []
    merged = False
    for held_out in gts:
        others = [a for a in gts if a != held_out]
        merged |= len(others) != len(gts) - 1
        matches = sum(1 for a in others if a["answer"] == res)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs), merged


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy in [0, 1] of one prediction against its annotator answers.

    Each answer counts as a distinct annotator (as with the official files, whose answer dicts
    differ by ``answer_id``); unrounded.
    """
    acc, _ = _answer_accuracy(
        prediction, [{"answer_id": i, "answer": a} for i, a in enumerate(gt_answers)]
    )
    return acc


def _check_results(
    results: Sequence[Mapping[str, Any]],
    qids: Iterable[Hashable],
    questions: Mapping[str, Any] | None,
) -> dict[Hashable, str]:
    """``VQA.loadRes`` checks; returns question id -> answer (last one wins, as there)."""
    if not isinstance(results, list):
        raise ValueError("results is not an array of objects")
    if {r["question_id"] for r in results} != set(qids):
        raise ValueError(
            "Results do not correspond to the annotations: every annotated question needs a "
            "prediction and no prediction may have an unknown question id"
        )
    if questions is not None and questions.get("task_type") == "Multiple Choice":
        choices = {q["question_id"]: q["multiple_choices"] for q in questions["questions"]}
        for r in results:
            if r["answer"] not in choices[r["question_id"]]:
                raise ValueError(
                    f"question {r['question_id']}: predicted answer is not one of the "
                    "multiple choices"
                )
    return {r["question_id"]: r["answer"] for r in results}


def _mean_percent(values: list[float]) -> float:
    return round_py2(100 * float(sum(values)) / len(values))


def evaluate_vqa(
    results: list[dict[str, Any]],
    annotations: dict[str, Any],
    questions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a VQA results list against an annotation file, as ``VQAEval.evaluate`` does.

    ``results``: ``[{"question_id", "answer"}]``; ``annotations``: the annotation file dict;
    ``questions``: the optional questions file dict, used (like ``loadRes``) only to check
    Multiple Choice answers. Returns percentages rounded to 2 decimals: ``overall``,
    ``perAnswerType``, ``perQuestionType`` and ``perQuestion`` (``evalQA``).
    Raises ``ValueError`` where the official code fails an assertion.
    """
    anns = annotations["annotations"]
    qids = [a["question_id"] for a in anns]
    if not qids:
        raise ValueError("annotations has no questions")
    if len(set(qids)) != len(qids):
        raise ValueError("annotations has duplicate question ids")
    answers = _check_results(results, qids, questions)

    acc_qa: list[float] = []
    per_qtype: dict[str, list[float]] = {}
    per_atype: dict[str, list[float]] = {}
    per_question: dict[Hashable, float] = {}
    merged_ids: list[Hashable] = []
    for ann in anns:
        qid = ann["question_id"]
        acc, merged = _answer_accuracy(answers[qid], ann["answers"])
        if merged:
            merged_ids.append(qid)
        acc_qa.append(acc)
        per_qtype.setdefault(ann["question_type"], []).append(acc)
        per_atype.setdefault(ann["answer_type"], []).append(acc)
        per_question[qid] = round_py2(100 * acc)
    if merged_ids:
        warnings.warn(
            f"{len(merged_ids)} question(s) (e.g. {merged_ids[0]!r}) have identical answer "
            "dicts; like vqaEval.py, leaving one out drops all its copies. Give each answer a "
            "distinct 'answer_id' as the official files do.",
            stacklevel=2,
        )
    return {
        "overall": _mean_percent(acc_qa),
        "perAnswerType": {k: _mean_percent(v) for k, v in per_atype.items()},
        "perQuestionType": {k: _mean_percent(v) for k, v in per_qtype.items()},
        "perQuestion": per_question,
    }
