"""Caption scores through pycocoevalcap, with and without Java."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest

from components.evaluation import caption_metrics
from components.evaluation.caption_metrics import caption_scores, simple_tokenize

HAS_JAVA = shutil.which("java") is not None
CORPUS = {
    "a": "a man riding a wave on top of a surfboard",
    "b": "two giraffes standing next to each other in a field",
    "c": "a plate of food with rice beans and a fork",
    "d": "a red double decker bus parked on the street",
}


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend Java is missing: simple_tokenize instead of PTBTokenizer, no METEOR."""
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)


def test_bleu_on_a_known_example(no_java: None) -> None:
    s = caption_scores({1: "the cat sat on the mat"}, {1: ["the cat is on the mat"]}, ["BLEU"])
    assert list(s) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]
    # unigrams: the x2, cat, on, mat match out of 6; same length, so no brevity penalty
    assert s["Bleu_1"] == pytest.approx(5 / 6, rel=1e-6)
    # bigrams: 'the cat', 'on the', 'the mat' match out of 5 -> sqrt(5/6 * 3/5)
    assert s["Bleu_2"] == pytest.approx(math.sqrt(0.5), rel=1e-6)


def test_bleu_brevity_penalty(no_java: None) -> None:
    s = caption_scores({1: "the cat"}, {1: ["the cat is on the mat"]}, ["BLEU"])
    assert s["Bleu_1"] == pytest.approx(math.exp(1 - 6 / 2), rel=1e-6)


def test_identical_captions_score_high(no_java: None) -> None:
    refs = {k: [v, "something else entirely"] for k, v in CORPUS.items()}
    s = caption_scores(dict(CORPUS), refs)
    assert set(s) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    # CIDEr-D averages over references: the identical one gives 10, the one shared by every
    # image has zero IDF and gives 0.
    assert s["CIDEr"] == pytest.approx(5.0, rel=1e-6)
    assert s["ROUGE_L"] == pytest.approx(1.0)
    assert s["Bleu_4"] == pytest.approx(1.0, rel=1e-6)
    single = caption_scores(dict(CORPUS), {k: [v] for k, v in CORPUS.items()}, ["CIDEr"])
    assert single["CIDEr"] == pytest.approx(10.0, rel=1e-6)  # CIDEr-D's x10 scale


def test_unrelated_captions_score_zero(no_java: None) -> None:
    preds = {k: "zebra umbrella xylophone" for k in CORPUS}
    s = caption_scores(preds, {k: [v] for k, v in CORPUS.items()})
    assert s["CIDEr"] == pytest.approx(0.0, abs=1e-9)
    assert s["ROUGE_L"] == 0.0
    assert s["Bleu_1"] < 1e-6


def test_cider_needs_a_corpus(no_java: None) -> None:
    # One image: every reference n-gram has document frequency == corpus size, so IDF is 0.
    s = caption_scores({1: "a dog on a couch"}, {1: ["a dog on a couch"]}, ["CIDEr"])
    assert s["CIDEr"] == 0.0


def test_fallback_tokenizer_lowercases_and_strips_punctuation(no_java: None) -> None:
    assert simple_tokenize('A dog\'s bone, "really"... (red)!') == "a dog 's bone really -lrb- red -rrb-"
    assert simple_tokenize("I can't -- it's 3.5 p.m.; 1,000 $5") == "i ca n't it 's 3.5 p.m. 1,000 $ 5"
    preds = {k: v.capitalize() + "." for k, v in CORPUS.items()}
    s = caption_scores(preds, {k: [v] for k, v in CORPUS.items()}, ["bleu", "cider"])
    assert s["Bleu_1"] == pytest.approx(1.0, rel=1e-6)
    assert s["CIDEr"] == pytest.approx(10.0, rel=1e-6)


def test_meteor_without_java_is_a_clear_error(no_java: None) -> None:
    with pytest.raises(RuntimeError, match="METEOR needs Java"):
        caption_scores({1: "a dog"}, {1: ["a dog"]}, ["METEOR"])
    assert "METEOR" not in caption_scores({1: "a dog"}, {1: ["a dog"]}, ["BLEU"])


def test_input_validation(no_java: None) -> None:
    with pytest.raises(ValueError, match="unknown caption metric"):
        caption_scores({1: "a"}, {1: ["a"]}, ["SPICE"])
    with pytest.raises(ValueError, match="same ids"):
        caption_scores({1: "a"}, {2: ["a"]})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores({1: "a"}, {1: []})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores({1: "a"}, {1: "a"})  # type: ignore[dict-item]


def test_pycocoevalcap_is_imported_lazily() -> None:
    code = (
        "import sys, components.evaluation.caption_metrics\n"
        "assert not any(m.startswith('pycocoevalcap') for m in sys.modules), 'eager import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=caption_metrics.__file__.rsplit(
        "/components/", 1)[0])  # fmt: skip


@pytest.mark.skipif(not HAS_JAVA, reason="needs java for the PTBTokenizer")
def test_ptb_path_matches_fallback_on_ordinary_captions() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [
        "A man riding a wave on top of a surfboard.",
        "A dog's bone (red) [blue] {green}.",
        'Don\'t do it -- he said "no"...',
        "The black-and-white cat, at 3.5 pm; 1,000 $5 50% a/b e.g. U.S.A. it's I'm we're",
        "What?! yes! co-op's #1 & more: x",
        "They'll've can't won't gonna wanna cannot",
        "A woman's hand holding a cell phone, with a 'smile'.",
        "an old-fashioned clock at 10:30, the dogs' bowl",
    ]
    ptb = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    assert [simple_tokenize(s) for s in sentences] == [ptb[i][0] for i in range(len(sentences))]
    preds = {k: v.upper() + "!" for k, v in CORPUS.items()}
    refs = {k: [v] for k, v in CORPUS.items()}
    with_java = caption_scores(preds, refs)
    assert with_java["CIDEr"] == pytest.approx(10.0, rel=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAVA, reason="METEOR needs java")
def test_meteor_with_java() -> None:
    s = caption_scores(dict(CORPUS), {k: [v] for k, v in CORPUS.items()}, ["METEOR"])
    assert s["METEOR"] > 0.9
