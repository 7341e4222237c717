"""ScienceQA problems.json items: one split read, images at <root>/<split>/<id>/image.png,
text-only problems kept and reported apart, malformed problems named; one tiny-model run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from components.evaluation.mcq_formats import load_mcq_file, load_scienceqa
from components.evaluation.official_formats import FormatError
from components.evaluation.official_scoring import score_files
from components.evaluation.runners import official_metrics


def _problem(question, choices, answer, split="test", image="image.png", hint="",
             subject="natural science"):
    return {"question": question, "choices": choices, "answer": answer, "hint": hint,
            "image": image, "task": "closed choice", "grade": "grade4", "subject": subject,
            "topic": "biology", "category": "Classification", "skill": "", "lecture": "",
            "solution": "", "split": split}


def _problems() -> dict:
    return {
        "1": _problem("Which animal is a mammal?", ["frog", "dog", "trout"], 1),
        "2": _problem("Which word is a noun?", ["run", "table"], 1, image=None,
                      hint="Look at the words.", subject="language science"),
        "3": _problem("Which is a liquid?", ["milk", "rock"], 0, split="train"),
        "4": _problem("Which colour is the map?", ["red", "blue"], 0, subject="social science"),
    }


@pytest.fixture
def sqa(tmp_path):
    """problems.json and its image folder, in ScienceQA's published layout."""
    root = tmp_path / "images"
    for split, pid, colour in (("test", "1", "red"), ("train", "3", "blue"), ("test", "4", "red")):
        (root / split / pid).mkdir(parents=True)
        Image.new("RGB", (40, 32), colour).save(root / split / pid / "image.png")
    path = tmp_path / "problems.json"
    path.write_text(json.dumps(_problems()))
    return path, root


def test_one_split_loads_with_images_and_text_only_problems(sqa):
    path, root = sqa
    items = load_scienceqa(path, root, "test")
    assert [it.id for it in items] == ["1", "2", "4"]
    first, text_only, _ = items
    assert first.image == str(root / "test" / "1" / "image.png")
    assert first.options == ("frog", "dog", "trout") and first.answer_letter == "B"
    assert first.question == "Which animal is a mammal?"
    assert text_only.image is None
    assert text_only.question == "Context: Look at the words.\nQuestion: Which word is a noun?"
    assert [it.category for it in items] == ["natural science", "language science",
                                             "social science"]
    assert [it.id for it in load_mcq_file(path, "scienceqa", images=root, split="train")] == ["3"]


def _broken(pid: str, **changes):
    problems = _problems()
    problems[pid].update(changes)
    return problems


@pytest.mark.parametrize("problems, message", [
    (_broken("1", answer=3), r"problem '1': answer must be the 0-based index of one of the 3"),
    (_broken("1", answer=True), r"problem '1': answer must be the 0-based index"),
    (_broken("1", answer="B"), r"problem '1': answer must be the 0-based index"),
    (_broken("1", choices="frog, dog"), r"problem '1': choices must be a list of 2 to 26"),
    (_broken("1", choices=["dog"]), r"problem '1': choices must be a list of 2 to 26"),
    (_broken("1", question=""), r"problem '1': question must be a non-empty string"),
    (_broken("2", hint=3), r"problem '2': hint must be a string or null"),
    (_broken("4", image="../1/image.png"), r"problem '4': image must be a file name or null"),
    (_broken("4", image="other.png"), r"problem '4': image file '.*other.png' not found"),
    (_broken("3", split=None), r"problem '3': split must be a string"),
    ({**_problems(), "5": ["not", "a", "problem"]}, r"problem '5': must be a JSON object"),
    ([_problem("Q?", ["a", "b"], 0)], r"must be a JSON object mapping problem ids"),
])
def test_malformed_problems_are_named_with_the_rule(sqa, problems, message):
    path, root = sqa
    path.write_text(json.dumps(problems))
    with pytest.raises(FormatError, match=message):
        load_scienceqa(path, root, "test")


def test_an_empty_split_or_a_missing_image_folder_is_an_error(sqa):
    path, root = sqa
    with pytest.raises(FormatError, match=r"no problems in split 'val' \(splits: \{'test': 3, "
                                          r"'train': 1\}\)"):
        load_scienceqa(path, root, "val")
    with pytest.raises(FormatError, match="problem '1': has an image but no image folder"):
        load_scienceqa(path, None, "test")


def test_scores_report_image_and_text_only_problems_apart(sqa, tmp_path):
    path, root = sqa
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"id": "1", "answer": "B"}, {"id": "2", "answer": "A"},
                                   {"id": "4", "answer": "A"}]))
    scores = score_files("mcq", results, items=path, items_format="scienceqa", images=root)
    assert (scores["correct"], scores["total"]) == (2, 3)
    assert scores["perModality"] == {"image": {"accuracy": 100.0, "correct": 2, "total": 2},
                                     "text_only": {"accuracy": 0.0, "correct": 0, "total": 1}}
    metrics = official_metrics("mcq", scores)
    assert metrics["image_accuracy"] == 100.0 and metrics["image_items"] == 2
    assert metrics["text_only_accuracy"] == 0.0 and metrics["text_only_items"] == 1
    assert metrics["accuracy_natural_science"] == 100.0
    assert metrics["accuracy_language_science"] == 0.0
    with pytest.raises(FormatError, match="result for unknown id '3'"):
        results.write_text(json.dumps([{"id": i, "answer": "A"} for i in ("1", "2", "3", "4")]))
        score_files("mcq", results, items=path, items_format="scienceqa", images=root)


def test_scienceqa_suite_on_a_tiny_model(backbones, tokenizer, sqa):
    from components.evaluation.mcq import choose_options
    from components.evaluation.runners import run_benchmark
    from components.evaluation.suites import SuiteSpec, parse_suites
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    path, root = sqa
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    encoder = ChatEncoder(processor, 512)
    (spec,) = parse_suites({"sqa": {"kind": "mcq", "items": path.name, "items_format": "scienceqa",
                                    "images": root.name}}, "suites.yaml", path.parent).values()
    assert spec == SuiteSpec(kind="mcq", items=str(path), items_format="scienceqa",
                             images=str(root), split="test")
    result = run_benchmark(spec, model, encoder, None, max_new_tokens=2, batch_size=2)
    items = load_scienceqa(path, root, "test")
    letters = [s.letter for s in choose_options(model, encoder, items)]
    assert [r["key"] for r in result.rows] == ["1", "2", "4"]
    assert [r["prediction"] for r in result.rows] == letters
    right = [float(a == it.answer_letter) for a, it in zip(letters, items, strict=True)]
    assert [r["score"] for r in result.rows] == right
    assert result.metrics["text_only_accuracy"] == 100 * right[1]
    assert result.metrics["image_accuracy"] == pytest.approx(100 * (right[0] + right[2]) / 2)
