"""The OpenAI-compatible judge's HTTP client against real local servers on 127.0.0.1: it never
follows a redirect (so its API key never reaches the redirect's target), speaks plain http only
to loopback hosts, reads its key only from a ``VLMFORGE_JUDGE_*`` variable, refuses a huge
reply, retries 429 / 5xx / dropped connections with backoff, and stops at the run's deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from components.evaluation.judge import JudgeError, JudgeItem
from components.evaluation.judge_backends import OpenAIJudge, make_judge
from components.evaluation.judge_http import check_base_url
from components.evaluation.suites import load_suite_config

KEY_ENV, KEY = "VLMFORGE_JUDGE_SECURITY_KEY", "sk-do-not-leak"
ITEM = JudgeItem("How many circles are there?", ("2",), "three")
ITEMS = [JudgeItem("How many circles are there?", ("2",), f"{n} circles") for n in range(4)]


def completion(text: str = "The count differs. So rating=1") -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 321, "completion_tokens": 7}}).encode()


class Server:
    """A server on 127.0.0.1 whose ``reply(handler, n)`` answers its n-th request (from 1) and
    which records every request's method, path and headers."""

    def __init__(self, reply: Callable[[BaseHTTPRequestHandler, int], None]):
        self.requests: list[dict] = []
        lock, server = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with lock:
                    server.requests.append({"method": self.command, "path": self.path,
                                            "headers": dict(self.headers)})
                    n = len(server.requests)
                try:
                    reply(self, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
         headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                 **(headers or {})}.items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def judge_for(server: Server, **kwargs) -> OpenAIJudge:
    return OpenAIJudge("judge-llm", f"{server.url}/v1", **{"backoff_s": 0.0, **kwargs})


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_and_the_key_is_not_forwarded(code, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with Server(lambda h, n: send(h, 200, completion())) as target:
        moved = f"{target.url}/v1/chat/completions"
        with Server(lambda h, n: send(h, code, b"", {"Location": moved})) as endpoint:
            judge = judge_for(endpoint, api_key_env=KEY_ENV)
            with pytest.raises(JudgeError, match=f"HTTP {code} redirect to {moved} refused"):
                judge.judge([ITEM])
            assert len(endpoint.requests) == 1  # no retry either
            assert endpoint.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
        assert target.requests == []  # the redirect's target never saw a request, nor the key


@pytest.mark.parametrize("url", ["http://example.com/v1", "http://10.0.0.5:8000/v1",
                                 "http://127.0.0.1.nip.io/v1", "http://[fe80::1]:80/v1",
                                 "ftp://127.0.0.1/v1", "https://user:pw@api.example.com/v1",
                                 "https://api.example.com/v1?key=x"])
def test_non_loopback_http_and_odd_urls_are_refused(url):
    with pytest.raises(ValueError, match="judge base_url"):
        OpenAIJudge("m", url)
    with pytest.raises(ValueError, match="judge base_url"):
        make_judge("openai", "m", base_url=url)


@pytest.mark.parametrize("url", ["https://api.openai.com/v1/", "http://127.0.0.1:8000/v1",
                                 "http://localhost:11434/v1", "http://[::1]:8000/v1",
                                 "http://127.0.0.2/v1"])
def test_https_and_loopback_http_are_accepted(url):
    assert OpenAIJudge("m", url).base_url == url.rstrip("/") == check_base_url(url)


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "VLMFORGE_JUDGE_",
                                  "vlmforge_judge_key", "VLMFORGE_JUDGEKEY", "HOME"])
def test_an_api_key_env_outside_the_judge_prefix_is_refused(name, tmp_path):
    with pytest.raises(ValueError, match=f"api_key_env '{name}' refused.*VLMFORGE_JUDGE_"):
        OpenAIJudge("m", "https://api.example.com/v1", api_key_env=name)
    config = tmp_path / "suites.yaml"
    config.write_text(yaml.safe_dump({"suites": {"judged": {
        "kind": "synthetic", "judge": {"backend": "openai", "model": "m",
                                       "base_url": "https://api.example.com/v1",
                                       "api_key_env": name}}}}))
    with pytest.raises(ValueError, match=rf"suite 'judged': judge: .*api_key_env '{name}' refused"):
        load_suite_config(config)


def test_a_suite_file_with_plain_http_to_another_host_is_refused(tmp_path):
    config = tmp_path / "suites.yaml"
    config.write_text(yaml.safe_dump({"judged": {"kind": "synthetic", "judge": {
        "backend": "openai", "model": "m", "base_url": "http://judge.example.com/v1",
        "api_key_env": "VLMFORGE_JUDGE_KEY"}}}))
    with pytest.raises(ValueError, match="plain http is allowed only on a loopback host"):
        load_suite_config(config)


def test_429_then_200_is_retried_and_a_small_retry_after_honoured():
    def reply(h, n):
        if n == 1:
            send(h, 429, b'{"error": "slow down"}', {"Retry-After": "1"})
        else:
            send(h, 200, completion())

    with Server(reply) as server:
        start = time.monotonic()
        judgments = judge_for(server).judge([ITEM])
        assert time.monotonic() - start >= 1.0  # backoff_s is 0: only Retry-After waits
        assert [j.rating for j in judgments] == [1]
        assert (judgments[0].prompt_tokens, judgments[0].completion_tokens) == (321, 7)
        assert len(server.requests) == 2


def test_5xx_and_dropped_connections_are_retried_with_exponential_backoff():
    def reply(h, n):
        if n == 1:
            h.close_connection = True
            h.connection.close()  # a dropped connection: no status line at all
        elif n in (2, 3):
            send(h, 503, b"busy")
        else:
            send(h, 200, completion("So rating=3"))

    with Server(reply) as server:
        start = time.monotonic()
        judgments = judge_for(server, backoff_s=0.1).judge([ITEM])
        assert time.monotonic() - start >= 0.1 + 0.2 + 0.4  # waits doubled each attempt
        assert [j.rating for j in judgments] == [3] and len(server.requests) == 4


def test_retries_are_bounded_and_a_long_retry_after_gives_up():
    with Server(lambda h, n: send(h, 500, b"broken")) as server:
        with pytest.raises(JudgeError, match=r"HTTP 500 .*broken \(after 3 attempts\)"):
            judge_for(server, max_attempts=3).judge([ITEM])
        assert len(server.requests) == 3
    with Server(lambda h, n: send(h, 429, b"", {"Retry-After": "3600"})) as server:
        start = time.monotonic()
        with pytest.raises(JudgeError, match="asks to retry after 3600s"):
            judge_for(server).judge([ITEM])
        assert time.monotonic() - start < 5 and len(server.requests) == 1
    with Server(lambda h, n: send(h, 401, b"bad key")) as server:
        with pytest.raises(JudgeError, match="HTTP 401"):
            judge_for(server).judge([ITEM])
        assert len(server.requests) == 1  # a client error is not retried


def test_a_huge_reply_is_refused():
    huge = completion("x" * 3_000_000)

    def stream(h, n):  # no Content-Length: the body ends when the connection closes
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(huge)

    with Server(lambda h, n: send(h, 200, huge)) as server:
        with pytest.raises(JudgeError, match="reply of 3000[0-9]+ bytes is over the 65536-byte"):
            judge_for(server, max_response_bytes=65536).judge([ITEM])
    with Server(stream) as server:
        with pytest.raises(JudgeError, match="reply is over the 65536-byte limit"):
            judge_for(server, max_response_bytes=65536).judge([ITEM])
        assert len(server.requests) == 1  # not retried
    with Server(lambda h, n: send(h, 200, completion())) as server:  # the default cap fits
        assert judge_for(server).judge([ITEM])[0].rating == 1


def test_a_slow_endpoint_stops_at_the_run_deadline_with_partial_results(tmp_path):
    def reply(h, n):
        if n > 1:
            time.sleep(4)
        send(h, 200, completion())

    with Server(reply) as server:
        judge = judge_for(server, deadline_s=1.0, timeout_s=30, batch_size=1,
                          cache_dir=tmp_path)
        start = time.monotonic()
        run = judge.judge_run(ITEMS)
        assert time.monotonic() - start < 2.5  # not the 4 s the server sleeps, nor timeout_s
        assert run.stopped == ("judge deadline of 1s passed after 1 of 4 items; partial "
                               "results kept")
        assert run.judgments[0] is not None and run.judgments[1:] == [None] * 3
        assert run.calls == 1
        with pytest.raises(JudgeError, match="judge deadline of 1s passed after 1 of 4"):
            judge.judge(ITEMS)  # the first answer is cached now; the second times out again
