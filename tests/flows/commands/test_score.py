"""`vlmforge score ...` through its own parser, and the generation bench's outputs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.commands.score import add_score_parser

ROOT = Path(__file__).resolve().parents[3]


def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_score_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def vqa_files(tmp_path):
    anns = {"annotations": [
        {"question_id": q, "image_id": 1, "question_type": "what", "answer_type": "other",
         "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(gts)]}
        for q, gts in ((1, ["cat"] * 10), (2, ["2"] * 3 + ["3"] * 7))]}
    results = [{"question_id": 1, "answer": "cat"}, {"question_id": 2, "answer": "two"}]
    return _write(tmp_path / "anns.json", anns), _write(tmp_path / "res.json", results)


def test_score_vqa_prints_json(vqa_files, capsys):
    anns, res = vqa_files
    code, out, _ = _run(["score", "vqa", "--results", res, "--annotations", anns], capsys)
    assert code == 0
    assert json.loads(out) == {"overall": 95.0, "perAnswerType": {"other": 95.0},
                               "perQuestionType": {"what": 95.0},
                               "perQuestion": {"1": 100.0, "2": 90.0}}
    code, out, _ = _run(["score", "vqa", "--results", res, "--annotations", anns, "--summary"], capsys)
    assert "perQuestion" not in json.loads(out)


def test_score_errors_are_one_line_on_stderr(vqa_files, tmp_path, capsys):
    anns, _ = vqa_files
    res = _write(tmp_path / "partial.json", [{"question_id": 1, "answer": "cat"}])
    code, out, err = _run(["score", "vqa", "--results", res, "--annotations", anns], capsys)
    assert code == 2 and out == ""
    assert err == "vlmforge score vqa: error: results: no result for question_id 2\n"


def test_score_caption_and_mcq(tmp_path, capsys):
    anns = _write(tmp_path / "captions.json", {"annotations": [
        {"image_id": 1, "caption": "a dog on a couch"}, {"image_id": 2, "caption": "a red bus"}]})
    res = _write(tmp_path / "res.json", [{"image_id": 1, "caption": "a dog on a couch"},
                                         {"image_id": 2, "caption": "a red bus"}])
    code, out, _ = _run(["score", "caption", "--results", res, "--annotations", anns,
                         "--metrics", "BLEU", "ROUGE_L"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["ROUGE_L"] == pytest.approx(1.0) and scores["images"] == 2

    items = tmp_path / "items.jsonl"
    items.write_text('{"question": "Colour?", "options": ["red", "blue"], "answer": "B"}\n'
                     '{"question": "Shape?", "options": ["circle", "square"], "answer": 0}\n')
    preds = _write(tmp_path / "preds.json", [{"id": 0, "answer": "The answer is B."},
                                             {"id": 1, "answer": "square"}])
    code, out, _ = _run(["score", "mcq", "--results", preds, "--items", str(items)], capsys)
    assert code == 0
    assert json.loads(out)["accuracy"] == 50.0


def test_score_mcq_in_the_mmbench_and_scienceqa_layouts(tmp_path, capsys):
    """`--format mmbench --circular` and `--format scienceqa --split` score as the suites do."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    tsv = tmp_path / "mmbench.tsv"
    tsv.write_text("index\tquestion\thint\tA\tB\tC\tanswer\tl2-category\timage\n"
                   f"0\tColour?\t\tred\tblue\t\tA\tcolour\t{image}\n"
                   "1\tShape?\tnan\tcircle\tsquare\tdot\tC\tshape\t0\n")
    answers = {0: "A", 1000000: "B", 1: "C", 1000001: "B", 2000001: "B"}  # 2000001: A is right
    preds = _write(tmp_path / "preds.json", [{"id": i, "answer": a} for i, a in answers.items()])
    code, out, _ = _run(["score", "mcq", "--results", preds, "--items", str(tsv), "--format",
                         "mmbench", "--circular", "--summary"], capsys)
    scores = json.loads(out)
    assert code == 0 and (scores["correct"], scores["total"]) == (1, 2)
    assert scores["rotations"] == {"accuracy": 80.0, "correct": 4, "total": 5}
    assert {c: v["accuracy"] for c, v in scores["perCategory"].items()} == {"colour": 100.0,
                                                                             "shape": 0.0}
    problems = _write(tmp_path / "problems.json", {
        "7": {"question": "Noun?", "choices": ["run", "table"], "answer": 1, "hint": "",
              "image": None, "split": "val", "subject": "language science"}})
    preds = _write(tmp_path / "sqa.json", [{"id": "7", "answer": "B"}])
    code, out, _ = _run(["score", "mcq", "--results", preds, "--items", problems, "--format",
                         "scienceqa", "--split", "val", "--images", str(tmp_path)], capsys)
    assert code == 0 and json.loads(out)["perModality"] == {
        "text_only": {"accuracy": 100.0, "correct": 1, "total": 1}}


def test_score_parser_imports_no_heavy_library():
    probe = ("import argparse, sys\nfrom flows.commands.score import add_score_parser\n"
             "p = argparse.ArgumentParser(); add_score_parser(p.add_subparsers())\n"
             "p.format_help()\nprint(','.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    loaded = set(out.stdout.strip().split(","))
    assert not loaded & {"torch", "transformers", "prefect", "mlflow", "pycocoevalcap", "numpy"}


def test_bench_generation_batched_answers_equal_per_sample_answers():
    from flows.bench.generation import bench_generation

    out = bench_generation(n_prompts=5, max_new_tokens=3, batch_size=4)
    assert {"batched_seconds", "per_sample_seconds", "ratio", "prompts"} <= set(out)
    assert out["same_answers"] == 1.0  # left-padded batching changes no greedy answer
