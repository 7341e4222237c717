"""Loaders of official files: VQAv2 / TextVQA / COCO captions / MCQ JSONL, and their errors."""

from __future__ import annotations

import json

import pytest

from components.evaluation.official_formats import (
    FormatError,
    MCQItem,
    load_caption_annotations,
    load_caption_results,
    load_mcq_items,
    load_mcq_results,
    load_vqa_annotations,
    load_vqa_questions,
    load_vqa_results,
)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _vqa_ann(qid, answers, qtype="what color", atype="other"):
    return {"question_id": qid, "image_id": 9, "question_type": qtype, "answer_type": atype,
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


# ------------------------------------------------------------------------------ VQA


def test_vqav2_files_load_as_given(tmp_path):
    anns = {"info": {}, "annotations": [_vqa_ann(1, ["red"] * 10), _vqa_ann(2, ["2"] * 10)]}
    questions = {"task_type": "Open-Ended", "questions": [
        {"question_id": 1, "image_id": 9, "question": "What color?"},
        {"question_id": 2, "image_id": 9, "question": "How many?"}]}
    results = [{"question_id": 2, "answer": "2"}, {"question_id": 1, "answer": "red"}]
    assert load_vqa_annotations(_write(tmp_path, "a.json", anns)) == anns
    assert load_vqa_questions(_write(tmp_path, "q.json", questions)) == questions
    assert load_vqa_results(_write(tmp_path, "r.json", results)) == results


def test_textvqa_data_converts_to_vqav2_annotations(tmp_path):
    data = {"dataset_name": "textvqa", "dataset_type": "val", "data": [
        {"question_id": 34602, "question": "what is the brand?", "image_id": "003a8ae2ef43b901",
         "answers": ["nokia"] * 9 + ["nokia phone"]}]}
    out = load_vqa_annotations(_write(tmp_path, "TextVQA_0.5.1_val.json", data))
    assert out["dataset_name"] == "textvqa" and "data" not in out
    (ann,) = out["annotations"]
    assert ann["question_id"] == 34602 and ann["image_id"] == "003a8ae2ef43b901"
    assert ann["question_type"] == ann["answer_type"] == "unknown"
    # distinct answer_ids: each annotator is left out alone, as in the official files
    assert ann["answers"][0] == {"answer": "nokia", "answer_id": 1}
    assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
    assert data["data"][0]["answers"][0] == "nokia"  # input untouched


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object with a 'annotations' array"),
        ({"annotations": []}, "no records"),
        ({"annotations": [{"answers": []}]}, "record 0: missing 'question_id'"),
        ({"annotations": [{"question_id": 1.5}]}, "record 0: question_id must be an integer or a string"),
        ({"annotations": [{"question_id": True}]}, "question_id must be an integer"),
        ({"annotations": [{**_vqa_ann(1, ["a"]), "answers": []}]},
         r"record 0 \(question_id 1\): answers must be a non-empty list"),
        ({"annotations": [{**_vqa_ann(1, ["a"]), "answers": ["a"]}]},
         r"answers\[0\] must be an object"),
        ({"annotations": [{**_vqa_ann(1, ["a"]), "answers": [{"answer": 3}]}]},
         r"answers\[0\]: answer must be a string"),
        ({"annotations": [{k: v for k, v in _vqa_ann(7, ["a"]).items() if k != "answer_type"}]},
         r"question_id 7\): missing 'answer_type'"),
        ({"annotations": [_vqa_ann(1, ["a"]), _vqa_ann(1, ["b"])]},
         "records 0 and 1: duplicate annotation for question_id 1"),
        ({"data": [{"question_id": 5, "question": "q", "image_id": "x"}]},
         "split without ground truth"),
        ({"data": [{"question_id": 5, "answers": ["a", None]}]}, r"answers\[1\] must be a string"),
    ],
)
def test_vqa_annotation_errors_name_file_record_and_rule(tmp_path, data, message):
    path = _write(tmp_path, "ann.json", data)
    with pytest.raises(FormatError, match=message) as err:
        load_vqa_annotations(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"question_id": 1, "answer": "a"}, "must be a JSON array of objects"),
        (["a"], "record 0: must be a JSON object"),
        ([{"answer": "a"}], "record 0: missing 'question_id'"),
        ([{"question_id": 1}], r"record 0 \(question_id 1\): missing 'answer'"),
        ([{"question_id": 1, "answer": None}], "answer must be a string"),
        ([{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"},
          {"question_id": 1, "answer": "c"}], "records 0 and 2: duplicate result for question_id 1"),
    ],
)
def test_vqa_result_errors(tmp_path, data, message):
    with pytest.raises(FormatError, match=message):
        load_vqa_results(_write(tmp_path, "res.json", data))


def test_vqa_question_errors(tmp_path):
    mc = {"task_type": "Multiple Choice",
          "questions": [{"question_id": 3, "image_id": 1, "question": "q?"}]}
    with pytest.raises(FormatError, match=r"question_id 3\): a Multiple Choice question needs"):
        load_vqa_questions(_write(tmp_path, "q.json", mc))
    with pytest.raises(FormatError, match="record 0: missing 'image_id'"):
        load_vqa_questions(_write(tmp_path, "q.json", {"questions": [{"question_id": 3}]}))


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(FormatError, match="nope.json: cannot read file"):
        load_vqa_results(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question_id": 1,\n "answer": }]')
    with pytest.raises(FormatError, match="bad.json: invalid JSON at line 2"):
        load_vqa_results(bad)


# ------------------------------------------------------------------------------ COCO captions


def test_coco_captions_group_references_by_image(tmp_path):
    anns = {"images": [{"id": 1}, {"id": 2}], "annotations": [
        {"image_id": 1, "id": 10, "caption": "A dog."}, {"image_id": 2, "id": 11, "caption": "A cat."},
        {"image_id": 1, "id": 12, "caption": "A brown dog."}]}
    assert load_caption_annotations(_write(tmp_path, "captions.json", anns)) == {
        1: ["A dog.", "A brown dog."], 2: ["A cat."]}
    res = [{"image_id": 2, "caption": "a cat"}, {"image_id": 1, "caption": "a dog"}]
    assert load_caption_results(_write(tmp_path, "res.json", res)) == {2: "a cat", 1: "a dog"}


def test_caption_errors(tmp_path):
    with pytest.raises(FormatError, match=r"record 1 \(image_id 4\): missing 'caption'"):
        load_caption_annotations(_write(tmp_path, "c.json", {"annotations": [
            {"image_id": 3, "caption": "x"}, {"image_id": 4}]}))
    with pytest.raises(FormatError, match="records 0 and 1: duplicate caption result for image_id 3"):
        load_caption_results(_write(tmp_path, "r.json", [{"image_id": 3, "caption": "x"},
                                                         {"image_id": 3, "caption": "y"}]))


# ------------------------------------------------------------------------------ MCQ


def test_mcq_items_from_jsonl(tmp_path):
    lines = [
        {"question": "Colour?", "options": ["red", "blue"], "answer": "B", "image": "img/1.png"},
        {"question": "Shape?", "options": ["circle", "square", "star"], "answer": 2},
        {"id": "x7", "question": "Size?", "options": ["big", "small"], "answer": "a",
         "image": "/abs/2.png"},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    items = load_mcq_items(path)
    assert items == [
        MCQItem(0, "Colour?", ("red", "blue"), 1, str(tmp_path / "img/1.png")),
        MCQItem(1, "Shape?", ("circle", "square", "star"), 2, None),
        MCQItem("x7", "Size?", ("big", "small"), 0, "/abs/2.png"),
    ]
    assert [it.answer_letter for it in items] == ["B", "C", "A"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "options": ["a", "b"], "answer": "C"}', "answer 'C' is outside the 2 options"),
        ('{"question": "q", "options": ["a", "b"], "answer": 2}', "answer 2 is outside"),
        ('{"question": "q", "options": ["a", "b"], "answer": "AB"}', "answer must be an option letter"),
        ('{"question": "q", "options": ["a", "b"], "answer": true}', "answer must be an option letter"),
        ('{"question": "q", "options": ["a", "b"]}', "missing 'answer'"),
        ('{"question": "q", "options": ["a"], "answer": 0}', "options must be a list of 2 to 26"),
        ('{"question": "q", "options": "a,b", "answer": 0}', "options must be a list"),
        ('{"question": "", "options": ["a", "b"], "answer": 0}', "question must not be empty"),
        ('{"question": "q", "options": ["a", "b"], "answer": 0, "image": 5}', "image must be a path"),
        ('{"question": "q", "options": ["a", "b"], "answer": 0, "id": [1]}', "id must be an integer"),
        ('["q"]', "must be a JSON object"),
        ('{"question": "q", "options": ["a", "b"], "answer": 0', "invalid JSON"),
    ],
)
def test_mcq_item_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "items.jsonl"
    path.write_text('{"question": "ok", "options": ["a", "b"], "answer": 0}\n' + line + "\n")
    with pytest.raises(FormatError, match=message) as err:
        load_mcq_items(path)
    assert f"{path}: line 2" in str(err.value)


def test_mcq_duplicate_ids_and_results(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1, "question": "q", "options": ["a", "b"], "answer": 0}\n'
                    '{"question": "q", "options": ["a", "b"], "answer": 0}\n')  # default id 1
    with pytest.raises(FormatError, match="lines 1 and 2: duplicate item for id 1"):
        load_mcq_items(path)
    res = [{"id": 0, "answer": "A"}, {"id": "q1", "answer": "The answer is B"}]
    assert load_mcq_results(_write(tmp_path, "r.json", res)) == {0: "A", "q1": "The answer is B"}
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in res))
    assert load_mcq_results(jsonl) == {0: "A", "q1": "The answer is B"}
    with pytest.raises(FormatError, match="records 0 and 1: duplicate result for id 0"):
        load_mcq_results(_write(tmp_path, "d.json", [res[0], res[0]]))
    jsonl.write_text(json.dumps(res[0]) + "\n\n" + json.dumps({"answer": "B"}) + "\n")
    with pytest.raises(FormatError, match=r"r.jsonl: line 3: missing 'id'"):
        load_mcq_results(jsonl)
