"""MMBench TSV items: base64 images and index references, absent options dropped, the hint
prepended, circular copies, CircularEval scoring, malformed rows named; one tiny-model run."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from PIL import Image

from components.evaluation.mcq_formats import (
    CIRCULAR_OFFSET,
    circular_items,
    load_mcq_file,
    load_mmbench_tsv,
)
from components.evaluation.official_formats import FormatError
from components.evaluation.official_scoring import score_files
from components.evaluation.runners import official_metrics

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "image",
          "source", "l2-category", "comment", "split"]


def _b64(colour: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (24, 20), colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _rows() -> list[dict]:
    """Three questions as MMBench's dev TSV holds them, and one circular copy of the first."""
    return [
        {"index": "0", "question": "What colour\tis the\nimage?", "hint": "nan", "A": "red",
         "B": "blue", "C": "green", "answer": "A", "category": "color", "image": _b64("red"),
         "l2-category": "attribute_reasoning", "split": "dev"},
        {"index": "1", "question": "Which shape?", "hint": "Look closely.", "A": "circle",
         "B": "square", "answer": "B", "category": "shape", "image": "0",
         "l2-category": "coarse_perception", "split": "dev"},
        {"index": "2", "question": "Which one?", "A": "a", "B": "b", "C": "c", "D": "d", "E": "e",
         "answer": "E", "category": "scene", "image": _b64("blue"),
         "l2-category": "coarse_perception", "split": "dev"},
        {"index": str(CIRCULAR_OFFSET), "question": "What colour\tis the\nimage?", "A": "blue",
         "B": "green", "C": "red", "answer": "C", "category": "color", "image": "0",
         "l2-category": "attribute_reasoning", "split": "dev"},
    ]


def _write(path, rows, header=HEADER):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[r.get(c, "") for c in header] for r in rows])
    return path


@pytest.fixture
def tsv(tmp_path):
    return _write(tmp_path / "MMBench_DEV_EN.tsv", _rows())


def test_rows_load_with_present_options_hint_and_shared_images(tsv):
    items = load_mmbench_tsv(tsv)
    assert [it.id for it in items] == [0, 1, 2]  # the circular copy is not a question
    q0, q1, q2 = items
    assert q0.question == "What colour\tis the\nimage?"  # a nan hint is no hint
    assert q0.options == ("red", "blue", "green") and q0.answer_letter == "A"
    assert q1.question == "Hint: Look closely.\nQuestion: Which shape?"
    assert q1.options == ("circle", "square") and q1.answer == 1
    assert len(q2.options) == 5 and q2.answer_letter == "E"
    assert q1.image == q0.image  # "0": row 0's image
    assert Image.open(io.BytesIO(q0.image)).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert [it.category for it in items] == ["attribute_reasoning", "coarse_perception",
                                             "coarse_perception"]


def test_circular_items_are_mmbench_rotations(tsv):
    items = load_mmbench_tsv(tsv)
    rotations = circular_items(items)
    assert [it.id for it in rotations] == [0, CIRCULAR_OFFSET, 2 * CIRCULAR_OFFSET, 1,
                                           1 + CIRCULAR_OFFSET] + [2 + k * CIRCULAR_OFFSET
                                                                   for k in range(5)]
    copy = _rows()[3]  # the file's own copy of question 0 is rotation 1
    assert rotations[1].options == (copy["A"], copy["B"], copy["C"])
    assert rotations[1].answer_letter == copy["answer"]
    assert [r.options[r.answer] for r in rotations[:3]] == ["red"] * 3
    assert load_mcq_file(tsv, "mmbench", circular=True) == rotations
    with pytest.raises(FormatError, match="circular evaluation needs integer ids"):
        circular_items([items[0].__class__("q", "Q?", ("a", "b"), 0)])


def _broken(row: int, **changes):
    rows = _rows()
    rows[row].update(changes)
    return rows


@pytest.mark.parametrize("rows, message", [
    (_broken(0, B=""), r"row 1 \(index '0'\): option B is empty but option C is not"),
    (_broken(0, B="nan"), r"row 1 \(index '0'\): option B is empty"),
    (_broken(1, B=""), r"row 2 \(index '1'\): needs at least options A and B"),
    (_broken(0, answer="D"), r"row 1 \(index '0'\): answer 'D' is not one of the options"),
    (_broken(0, answer=""), r"row 1 \(index '0'\): no answer"),
    (_broken(0, question=""), r"row 1 \(index '0'\): question must not be empty"),
    (_broken(1, image="7"), r"row 2 \(index '1'\): image '7' must be the index of a row"),
    (_broken(2, image="1"), r"row 3 \(index '2'\): image '1' must be the index of a row"),
    (_broken(0, image="!" * 80), r"row 1 \(index '0'\): image is neither base64"),
    (_broken(0, image=base64.b64encode(b"not an image" * 8).decode()),
     r"row 1 \(index '0'\): image is base64 but not an image"),
    (_broken(1, index="0"), r"row 2 \(index '0'\): duplicate index, also row 1"),
    (_broken(1, index="x1"), r"row 2 \(index 'x1'\): index must be a non-negative integer"),
    (_broken(3, index=str(CIRCULAR_OFFSET + 5)), r"row 4 .*circular copy of index 5"),
])
def test_malformed_rows_are_named_with_the_rule(tmp_path, rows, message):
    with pytest.raises(FormatError, match=message):
        load_mmbench_tsv(_write(tmp_path / "bad.tsv", rows))


def test_malformed_files(tmp_path):
    with pytest.raises(FormatError, match="header lacks column.*'answer'"):
        load_mmbench_tsv(_write(tmp_path / "test.tsv", _rows(),
                                [c for c in HEADER if c != "answer"]))
    with pytest.raises(FormatError, match="option columns .* must run from A"):
        load_mmbench_tsv(_write(tmp_path / "gap.tsv", _rows(), [c for c in HEADER if c != "C"]))
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("\t".join(HEADER) + "\n" + "\t".join(["0"] * (len(HEADER) + 1)) + "\n")
    with pytest.raises(FormatError, match="row 1: has a different number of cells"):
        load_mmbench_tsv(ragged)
    with pytest.raises(FormatError, match="cannot read file"):
        load_mmbench_tsv(tmp_path / "missing.tsv")
    copies_only = _write(tmp_path / "copies.tsv", [{**_rows()[0], "index": str(CIRCULAR_OFFSET)}])
    with pytest.raises(FormatError, match="circular copy of index 0"):
        load_mmbench_tsv(copies_only)


def test_circular_scoring_needs_every_rotation_right(tsv, tmp_path):
    rotations = circular_items(load_mmbench_tsv(tsv))
    answers = {it.id: it.answer_letter for it in rotations}
    answers[1 + CIRCULAR_OFFSET] = "B" if answers[1 + CIRCULAR_OFFSET] == "A" else "A"
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"id": i, "answer": a} for i, a in answers.items()]))
    scores = score_files("mcq", results, items=tsv, items_format="mmbench", circular=True)
    assert (scores["correct"], scores["total"]) == (2, 3)
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["rotations"] == {"accuracy": 90.0, "correct": 9, "total": 10}
    assert scores["perQuestion"] == {0: True, 1: False, 2: True}
    assert scores["perCategory"]["coarse_perception"] == {"accuracy": 50.0, "correct": 1, "total": 2}
    metrics = official_metrics("mcq", scores)
    assert metrics["rotation_accuracy"] == 90.0
    assert metrics["accuracy_coarse_perception"] == 50.0
    assert metrics["image_accuracy"] == pytest.approx(200 / 3) and metrics["image_items"] == 3
    # without CircularEval the questions alone are scored
    results.write_text(json.dumps([{"id": i, "answer": "A"} for i in (0, 1, 2)]))
    plain = score_files("mcq", results, items=tsv, items_format="mmbench")
    assert (plain["correct"], plain["total"]) == (1, 3) and "rotations" not in plain
    results.write_text(json.dumps([{"id": i, "answer": "A"} for i in (0, 1, 2)]))
    with pytest.raises(FormatError, match="no result for id"):
        score_files("mcq", results, items=tsv, items_format="mmbench", circular=True)


def test_mmbench_suite_on_a_tiny_model(backbones, tokenizer, tsv):
    """CircularEval through `run_benchmark`: every rotation asked (encoded images included),
    one row per question, right only when all its rotations are; the results file rescored
    gives the recorded metrics."""
    from components.evaluation.mcq import choose_options
    from components.evaluation.runners import run_benchmark
    from components.evaluation.suites import SuiteSpec
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    encoder = ChatEncoder(processor, 512)
    spec = SuiteSpec(kind="mcq", items=str(tsv), items_format="mmbench", circular=True)
    assert not spec.needs_data
    result = run_benchmark(spec, model, encoder, None, max_new_tokens=2, batch_size=4)
    rotations = circular_items(load_mmbench_tsv(tsv))
    letters = {s.id: s.letter for s in choose_options(model, encoder, rotations, batch_size=3)}
    assert [r["id"] for r in result.results] == [it.id for it in rotations]
    assert {r["id"]: r["answer"] for r in result.results} == letters
    assert [r["key"] for r in result.rows] == ["0", "1", "2"]
    for row in result.rows:
        q = int(row["key"])
        mine = [it for it in rotations if it.id % CIRCULAR_OFFSET == q]
        assert row["score"] == float(all(letters[it.id] == it.answer_letter for it in mine))
        assert row["prediction"] == "/".join(letters[it.id] for it in mine)
    assert result.metrics["accuracy"] == pytest.approx(
        100 * sum(r["score"] for r in result.rows) / 3)
    results = tsv.parent / "results.json"
    results.write_text(json.dumps(result.results))
    rescored = score_files("mcq", results, items=tsv, items_format="mmbench", circular=True)
    assert official_metrics("mcq", rescored) == result.metrics
    generated = run_benchmark(spec.model_copy(update={"circular": False, "mcq_answer": "generate"}),
                              model, encoder, None, max_new_tokens=2, batch_size=4)
    assert [r["key"] for r in generated.rows] == ["0", "1", "2"]


def test_suite_spec_rules_for_item_formats(tsv):
    from components.evaluation.mcq_formats import ITEM_FORMATS
    from components.evaluation.suites import MCQ_FORMATS, SuiteSpec

    assert MCQ_FORMATS == ITEM_FORMATS
    with pytest.raises(ValueError, match="circular applies to mcq suites with items_format mmbench"):
        SuiteSpec(kind="mcq", items=str(tsv), circular=True)
    with pytest.raises(ValueError, match="items_format applies to mcq suites only"):
        SuiteSpec(kind="vqa", annotations="a.json", images="i", items_format="mmbench")
    with pytest.raises(ValueError, match="a scienceqa mcq suite needs images"):
        SuiteSpec(kind="mcq", items="problems.json", items_format="scienceqa")
