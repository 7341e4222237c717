"""Frozen judge records: a judge budget stops cleanly with partial results kept and counted;
the record (predictions, judge, judgments, tokens, cost) round-trips through its files; a
replay under the recorded judge gives identical scores with no new call, under another judge
it asks that judge. Real judges: an OpenAI-compatible server on 127.0.0.1 that counts its
requests, and the tiny local Llama."""

from __future__ import annotations

import json
import re

import pytest

from components.evaluation.judge import JudgeItem, lave_prompt
from components.evaluation.judge_records import (
    RECORD_FILES,
    JudgeRecord,
    build_judge,
    judge_predictions,
    judge_rows,
    replay,
)
from components.evaluation.suites import JudgeSpec
from tests.components.evaluation.chat_server import ChatServer

USAGE = {"prompt_tokens": 100, "completion_tokens": 5}


class CountingJudgeServer(ChatServer):
    """``/v1/chat/completions`` on 127.0.0.1: rating 3 when the candidate contains a reference,
    else 1 (its model name in the rationale), with ``usage``; counts requests per model."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def answer(self, path, headers, body):
        self.calls.append(body["model"])
        prompt = body["messages"][0]["content"].rsplit("Question:", 1)[1]
        refs = re.findall(r"'([^']*)'", prompt.split("Reference answers:")[1].split("\n")[0])
        candidate = prompt.rsplit("Candidate answer: '", 1)[1].split("'\n")[0]
        rating = 3 if any(r in candidate for r in refs) else 1
        return 200, {"choices": [{"message": {
            "content": f"{body['model']} says so. So rating={rating}"}}], "usage": USAGE}


@pytest.fixture
def server():
    with CountingJudgeServer() as running:
        yield running


ROWS = [  # a suite's rows: the first is an exact match (never sent), one caption (not judged)
    {"key": "q0", "task": "vqa", "question": "What colour is the circle?", "answers": ["red"],
     "prediction": "Red."},
    {"key": "q1", "task": "vqa", "question": "Where is the square?", "answers": ["top left"],
     "prediction": "the top left corner"},
    {"key": "q2", "task": "vqa", "question": "How many circles?", "answers": ["2"],
     "prediction": "three"},
    {"key": "c0", "task": "caption", "question": "Describe.", "answers": ["a cat"],
     "prediction": "a dog"},
    {"key": "q3", "task": "vqa", "question": "What shape is it?", "answers": ["circle"],
     "prediction": "a round circle"},
    {"key": "q4", "task": "vqa", "question": "Is it big?", "answers": ["no"],
     "prediction": "very big"},
]


def rows() -> list[dict]:
    return [dict(r) for r in ROWS]


def judge_items(rows_: list[dict]) -> list[JudgeItem]:
    return [JudgeItem(r["question"], tuple(r["answers"]), r["prediction"]) for r in rows_]


def spec_for(server, **kwargs) -> JudgeSpec:
    return JudgeSpec(backend="openai", model="judge-a", base_url=server.base_url, **kwargs)


def test_a_call_budget_stops_cleanly_and_keeps_partial_results(server, tmp_path):
    table = rows()
    metrics, record = judge_rows(spec_for(server, max_calls=2, price_per_1k_tokens=0.5),
                                 table, tmp_path / "cache")
    assert len(server.calls) == 2  # the budget: no third call
    s = record.summary
    assert s["stopped"] == "judge budget of 2 calls reached after 3 of 5 items; partial results kept"
    assert (s["items"], s["judged"], s["calls"]) == (5, 3, 2)
    assert (s["prompt_tokens"], s["completion_tokens"], s["tokens_from"]) == (200, 10, ["usage"])
    assert s["estimated_cost"] == pytest.approx(210 / 1000 * 0.5)
    # scored over the 3 judged items (exact match 3, "top left corner" 3, "three" 1)
    assert metrics == {"judge_score": pytest.approx(2 / 3), "judge_unparsed": 0.0,
                       "judge_exact_match": pytest.approx(1 / 3), "judge_judged": 3.0}
    assert [r.get("judge_rating") for r in table] == [3, 3, 1, None, None, None]
    assert [j["source"] for j in record.judgments] == ["exact_match", "model", "model",
                                                       "not_judged", "not_judged"]
    assert [p["key"] for p in record.predictions] == ["q0", "q1", "q2", "q3", "q4"]

    # the same judge replayed with a larger budget asks only about the items left
    more = spec_for(server, max_calls=10)
    metrics, again = replay(record, more, tmp_path / "other-cache")
    assert len(server.calls) == 4 and again.summary["calls"] == 2
    assert [j["source"] for j in again.judgments] == ["exact_match", "record", "record",
                                                      "model", "model"]
    assert metrics["judge_judged"] == 5.0 and again.summary["stopped"] is None


def test_a_token_budget_stops_before_a_call_that_would_not_fit(server, tmp_path):
    spec = spec_for(server, max_new_tokens=16)
    judge = build_judge(spec, tmp_path)
    first, second = (judge.prompt_tokens(lave_prompt(j)) for j in judge_items(ROWS[1:3]))
    # room for the first call (its prompt and max_new_tokens) only: after it, the 105 tokens
    # the server reports plus the second prompt and max_new_tokens do not fit
    budget = first + 16
    assert USAGE["prompt_tokens"] + USAGE["completion_tokens"] + second + 16 > budget
    _, record = judge_rows(spec.model_copy(update={"max_tokens": budget}), rows(), tmp_path)
    assert len(server.calls) == 1
    assert record.summary["stopped"] == (f"judge budget of {budget} tokens reached after 2 of 5 "
                                         "items; partial results kept")


def test_the_record_round_trips_and_replays_with_identical_scores_and_no_call(server, tmp_path):
    spec = spec_for(server)
    metrics, record = judge_rows(spec, rows(), tmp_path / "cache")
    assert len(server.calls) == 4  # every non-exact answer once
    paths = record.write(tmp_path / "record")
    assert [p.name for p in paths] == list(RECORD_FILES)
    judge = json.loads(paths[0].read_text())
    assert judge["backend"] == "openai" and judge["model"] == "judge-a"
    assert judge["endpoint"] == f"{server.base_url}/chat/completions"
    assert judge["model_id"] == build_judge(spec, tmp_path).cache_id
    assert "Candidate answer: '{candidate}'" in judge["prompt_template"]
    assert judge["spec"]["price_per_1k_tokens"] == 0 and judge["summary"]["estimated_cost"] == 0
    first = json.loads(paths[1].read_text().splitlines()[1])
    assert first == {"key": "q1", "question": "Where is the square?",
                     "references": ["top left"], "candidate": "the top left corner"}
    judged = [json.loads(line) for line in paths[2].read_text().splitlines()]
    assert judged[1]["prompt"] == lave_prompt(judge_items(ROWS[1:2])[0])
    assert judged[1]["output"] == "judge-a says so. So rating=3" and judged[1]["rating"] == 3
    assert (judged[1]["prompt_tokens"], judged[1]["completion_tokens"]) == (100, 5)

    stored = JudgeRecord.read(tmp_path / "record")
    again, replayed = replay(stored, spec, tmp_path / "empty-cache")  # no cache to lean on
    assert len(server.calls) == 4  # zero new calls
    assert again == metrics  # identical, not approximately equal
    assert replayed.summary["calls"] == 0
    assert [j["rating"] for j in replayed.judgments] == [j["rating"] for j in record.judgments]

    other, by_b = replay(stored, spec_for(server).model_copy(update={"model": "judge-b"}),
                         tmp_path / "cache")
    assert server.calls[4:] == ["judge-b"] * 4  # another judge is asked about every answer
    assert by_b.summary["calls"] == 4 and other["judge_score"] == metrics["judge_score"]
    assert by_b.judgments[1]["output"].startswith("judge-b")


def test_a_record_missing_a_file_is_refused(server, tmp_path):
    _, record = judge_rows(spec_for(server), rows(), tmp_path / "cache")
    record.write(tmp_path / "record")
    (tmp_path / "record" / "judgments.jsonl").unlink()
    with pytest.raises(ValueError, match="judge record .*unreadable"):
        JudgeRecord.read(tmp_path / "record")
    assert judge_rows(spec_for(server), [ROWS[3]], tmp_path) == ({}, None)  # captions only


def test_a_local_judge_records_its_weights_and_tokenizer_counts(tiny_judge_dir, tmp_path):
    spec = JudgeSpec(model=str(tiny_judge_dir), max_new_tokens=6, batch_size=2, max_calls=3,
                     price_per_1k_tokens=2.0)
    predictions = [{"key": r["key"], "question": r["question"], "references": r["answers"],
                    "candidate": r["prediction"]} for r in ROWS if r["task"] != "caption"]
    metrics, record = judge_predictions(spec, predictions, tmp_path / "cache")
    judge = record.judge
    assert judge["backend"] == "local" and judge["model"] == str(tiny_judge_dir)
    assert re.fullmatch(r"[0-9a-f]{64}", judge["weights_sha256"])
    assert judge["fingerprint"] in judge["model_id"] and judge["chat_template"]
    s = record.summary
    assert s["calls"] == 3 and s["judged"] == 4 and s["tokens_from"] == ["tokenizer"]
    assert s["stopped"].startswith("judge budget of 3 calls reached after 4 of 5 items")
    model_made = [j for j in record.judgments if j["source"] == "model"]
    assert all(j["prompt_tokens"] > 100 and 1 <= j["completion_tokens"] <= 6
               for j in model_made)
    assert s["prompt_tokens"] == sum(j["prompt_tokens"] for j in model_made)
    assert s["estimated_cost"] == pytest.approx(
        (s["prompt_tokens"] + s["completion_tokens"]) / 1000 * 2.0)
    assert metrics["judge_judged"] == 4.0

    record.write(tmp_path / "record")
    no_budget = spec.model_copy(update={"max_calls": 0})  # no new call allowed at all
    again, replayed = replay(JudgeRecord.read(tmp_path / "record"), no_budget,
                             tmp_path / "empty-cache")
    assert replayed.summary["calls"] == 0 and again == metrics
    assert [j["source"] for j in replayed.judgments][:4] == [
        "exact_match", "record", "record", "record"]
