"""LAVE-style judge: parsing hand-written judge outputs, the prompt, the exact-match
short-circuit, the whole path offline with a tiny randomly initialised Llama (its ratings
mean nothing; the test shows the path runs and the disk cache answers the second time), and
the OpenAI-compatible HTTP backend against a canned local server."""

from __future__ import annotations

import json

import pytest

from components.evaluation.judge import (
    DEMONSTRATIONS,
    INSTRUCTIONS,
    JudgeCache,
    JudgeError,
    JudgeItem,
    Judgment,
    judge_summary,
    lave_prompt,
    parse_rating,
    rating_score,
)
from components.evaluation.judge_backends import LocalJudge, OpenAIJudge, make_judge
from tests.components.evaluation.chat_server import ChatServer


@pytest.mark.parametrize(("output", "rating"), [
    ("The candidate answer matches the references. So rating=3", 3),
    ("The answer is partly right. So rating = 2.", 2),
    ("It names another colour. So rating=1", 1),
    ("Rating: 2", 2),
    ("rating is 3", 3),
    ("**Rating:** 1", 1),
    ("3", 3),
    (" 2. ", 2),
    ("First I thought rating=1 but the reference says blue. So rating=3", 3),  # the last one
    ("So rating=4", None),
    ("rating=10", None),
    ("rating=2.5", None),
    ("The answer is correct.", None),
    ("", None),
    ("3 shapes", None),
])
def test_parse_rating_on_hand_written_outputs(output, rating):
    assert parse_rating(output) == rating


def test_rating_maps_to_lave_scores():
    assert [rating_score(r) for r in (1, 2, 3, None)] == [0.0, 0.5, 1.0, None]
    with pytest.raises(ValueError, match="rating must be 1, 2 or 3"):
        rating_score(0)
    assert Judgment(2, "So rating=2", "model").score == 0.5


def test_prompt_has_instructions_demonstrations_and_the_item_last():
    prompt = lave_prompt(JudgeItem("What colour is the square?", ("blue", "blue", "navy"),
                                   "dark blue"))
    assert prompt.startswith(INSTRUCTIONS)
    for _, _, _, output in DEMONSTRATIONS:
        assert output in prompt
    assert prompt.endswith("Question: 'What colour is the square?'\n"
                           "Reference answers: 'blue', 'navy'\n"  # duplicates dropped
                           "Candidate answer: 'dark blue'\nOutput:")
    assert [parse_rating(out) for *_, out in DEMONSTRATIONS] == [1, 2, 3]


def test_summary_counts_unreadable_outputs_as_zero():
    js = [Judgment(3, "", "exact_match"), Judgment(2, "rating=2", "model"),
          Judgment(None, "???", "model"), Judgment(1, "rating=1", "cache")]
    assert judge_summary(js) == {"score": pytest.approx(1.5 / 4), "unparsed": 0.25,
                                 "exact_match": 0.25}
    with pytest.raises(ValueError, match="no judgments"):
        judge_summary([])


def test_cache_is_keyed_by_model_and_prompt(tmp_path):
    cache = JudgeCache(tmp_path)
    cache.put("m1", "prompt", "So rating=3")
    assert cache.get("m1", "prompt") == "So rating=3"
    assert cache.get("m2", "prompt") is None and cache.get("m1", "other") is None
    path = cache.path("m1", "prompt")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="judge cache entry .*unreadable"):
        cache.get("m1", "prompt")
    path.write_text(json.dumps({"model_id": "m9", "prompt": "prompt", "output": "x"}))
    with pytest.raises(ValueError, match="holds another"):
        cache.get("m1", "prompt")


ITEMS = [
    JudgeItem("What colour is the circle?", ("red",), "Red."),  # exact match after normalization
    JudgeItem("Where is the blue square?", ("top left",), "left"),
    JudgeItem("How many circles are there?", ("2",), "three"),
    JudgeItem("Where is the blue square?", ("top left",), "left"),  # same prompt as item 1
]


def test_local_judge_runs_offline_and_caches_on_disk(tiny_judge_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    judge = LocalJudge(tiny_judge_dir, cache_dir=cache_dir, max_new_tokens=6, batch_size=2)
    first = judge.judge(ITEMS)
    assert [j.source for j in first] == ["exact_match", "model", "model", "model"]
    assert first[0].rating == 3 and first[0].score == 1.0
    for j in first[1:]:
        assert j.rating == parse_rating(j.output)  # whatever the random model wrote, parsed
    assert first[1] == first[3]
    assert len(list(cache_dir.rglob("*.json"))) == 2  # one entry per distinct prompt

    again = LocalJudge(tiny_judge_dir, cache_dir=cache_dir, max_new_tokens=6).judge(ITEMS)
    assert [j.source for j in again] == ["exact_match", "cache", "cache", "cache"]
    assert [j.output for j in again] == [j.output for j in first]
    assert judge._model is not None
    cached_only = LocalJudge(tiny_judge_dir, cache_dir=cache_dir, max_new_tokens=6)
    cached_only.judge(ITEMS[1:3])
    assert cached_only._model is None  # every answer came from the cache: the model never loaded

    other = LocalJudge(tiny_judge_dir, cache_dir=cache_dir, max_new_tokens=7)  # another judge id
    assert other.model_id != judge.model_id
    assert other.render(ITEMS[1]) == judge.render(ITEMS[1])
    assert other.render(ITEMS[1]).endswith("Output:<end_of_utterance>\n<|im_start|>assistant\n")


def test_judge_rejects_bad_input(tiny_judge_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a transformers model directory"):
        LocalJudge(tmp_path)
    judge = LocalJudge(tiny_judge_dir, exact_match_shortcut=False)
    with pytest.raises(ValueError, match="judge item 1: references must be a non-empty list"):
        judge.judge([ITEMS[0], JudgeItem("Q?", (), "a")])


class _CannedChatServer(ChatServer):
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (free port) that answers
    from ``replies`` (candidate answer -> completion text, or an int HTTP status) and records
    every request (path, headers, JSON body)."""

    def __init__(self, replies: dict[str, str | int]):
        super().__init__()
        self.replies = replies
        self.requests: list[dict] = []

    def answer(self, path, headers, body):
        self.requests.append({"path": path, "headers": headers, "body": body})
        prompt = body["messages"][-1]["content"]
        candidate = prompt.rsplit("Candidate answer: '", 1)[1].split("'\n", 1)[0]
        reply = self.replies.get(candidate, 500)
        if path != "/v1/chat/completions" or isinstance(reply, int):
            return (404 if isinstance(reply, str) else reply), {"error": {"message": "canned failure"}}
        return 200, {"object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}


HTTP_ITEMS = [
    JudgeItem("What colour is the circle?", ("red",), "Red."),  # exact match: never sent
    JudgeItem("Where is the blue square?", ("top left",), "top left corner"),
    JudgeItem("How many circles are there?", ("2",), "three"),
    JudgeItem("Where is the blue square?", ("top left",), "top left corner"),  # same prompt
]
CANNED = {"top left corner": "The candidate names the same corner. So rating=3",
          "three": "The count differs from the references. So rating=1"}


def test_openai_judge_parses_ratings_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFORGE_JUDGE_TEST_KEY", "sk-test")
    cache_dir = tmp_path / "cache"
    with _CannedChatServer(CANNED) as server:
        judge = OpenAIJudge("judge-llm", server.base_url + "/", cache_dir=cache_dir,
                            max_new_tokens=32, api_key_env="VLMFORGE_JUDGE_TEST_KEY",
                            timeout_s=10)
        first = judge.judge(HTTP_ITEMS)
        assert [j.source for j in first] == ["exact_match", "model", "model", "model"]
        assert [j.rating for j in first] == [3, 3, 1, 3]
        assert [j.score for j in first] == [1.0, 1.0, 0.0, 1.0]
        assert first[1].output == CANNED["top left corner"]

        assert len(server.requests) == 2  # one per distinct prompt, none for the exact match
        # requests run concurrently: they may arrive in any order
        expected = sorted(lave_prompt(item) for item in HTTP_ITEMS[1:3])
        assert sorted(r["body"]["messages"][0]["content"] for r in server.requests) == expected
        for request in server.requests:
            assert request["path"] == "/v1/chat/completions"
            assert request["headers"]["Authorization"] == "Bearer sk-test"
            assert request["body"] == {
                "model": "judge-llm", "temperature": 0, "max_tokens": 32,
                "messages": [{"role": "user", "content": request["body"]["messages"][0]["content"]}]}
        assert len(list(cache_dir.rglob("*.json"))) == 2

        again = OpenAIJudge("judge-llm", server.base_url, cache_dir=cache_dir,
                            max_new_tokens=32).judge(HTTP_ITEMS)
        assert [j.source for j in again] == ["exact_match", "cache", "cache", "cache"]
        assert [j.rating for j in again] == [3, 3, 1, 3]
        assert len(server.requests) == 2  # served from the cache: the server saw nothing new

        # no key env named (or named but unset): no Authorization header, nothing required
        monkeypatch.delenv("VLMFORGE_JUDGE_TEST_KEY")
        other_model = make_judge("openai", "other-llm", base_url=server.base_url,
                                 api_key_env="VLMFORGE_JUDGE_TEST_KEY", cache_dir=cache_dir)
        assert other_model.judge(HTTP_ITEMS[2:3])[0].source == "model"  # another cache key
        assert len(server.requests) == 3
        assert "Authorization" not in server.requests[-1]["headers"]
        assert server.requests[-1]["body"]["model"] == "other-llm"


def test_cache_keys_differ_by_backend(tmp_path):
    http = OpenAIJudge("m", "http://127.0.0.1:9/v1", model_id="same-id")
    assert http.cache_id == "openai:same-id"
    local = LocalJudge.__new__(LocalJudge)
    local.model_id = "same-id"
    assert local.cache_id == "local:same-id" != http.cache_id


def test_openai_judge_reports_http_errors(tmp_path):
    with _CannedChatServer({**CANNED, "three": 500}) as server:
        judge = OpenAIJudge("judge-llm", server.base_url, cache_dir=tmp_path, timeout_s=10,
                            backoff_s=0.01)
        endpoint = f"{server.base_url}/chat/completions"
        with pytest.raises(JudgeError, match=rf"judge endpoint {endpoint}: HTTP 500 .*canned"):
            judge.judge(HTTP_ITEMS[2:3])
        assert not list(tmp_path.rglob("*.json"))  # a failure is not cached
        wrong_root = OpenAIJudge("judge-llm", server.base_url.removesuffix("/v1"),
                                 timeout_s=10)
        with pytest.raises(JudgeError, match="HTTP 404"):
            wrong_root.judge(HTTP_ITEMS[1:2])
    with pytest.raises(JudgeError, match=rf"judge endpoint {endpoint}: request failed"):
        judge.judge(HTTP_ITEMS[2:3])  # the server is gone


def test_make_judge_and_openai_judge_reject_bad_config(tiny_judge_dir):
    assert isinstance(make_judge("local", str(tiny_judge_dir)), LocalJudge)
    with pytest.raises(ValueError, match="unknown judge backend 'anthropic'"):
        make_judge("anthropic", "m")
    with pytest.raises(ValueError, match="needs a base_url"):
        make_judge("openai", "m")
    with pytest.raises(ValueError, match="openai judge backend only"):
        make_judge("local", str(tiny_judge_dir), base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        OpenAIJudge("m", "127.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="at least 1"):
        OpenAIJudge("m", "http://127.0.0.1:1/v1", max_new_tokens=0)
