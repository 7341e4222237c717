"""5. Work stops when its request times out: generation checks the request's deadline between
tokens, so after the server's 504 the model lock is free and the next request is answered."""

from __future__ import annotations

from pathlib import Path

from flows.commands.serve import stop_server
from registry.serving_limits import LIMITS
from tests.security.helpers import GOOD_ROW, register_in, serve

TIMEOUT_S = 3


def test_a_timed_out_generation_releases_the_model(serving_store: Path, tmp_path: Path) -> None:
    # ~16 ms a token on this CPU, and it never stops early (end-of-utterance suppressed): one
    # row of max_new_tokens holds the model for ~8 s, the request's two rows ~16 s; the
    # timeout is 3 s.
    uri = register_in(serving_store, tmp_path / "model", text_hidden=512, text_layers=8,
                      context=2048, endless=True)
    server = serve(serving_store, uri, tmp_path / "server.log", timeout_s=TIMEOUT_S)
    try:
        rows = [{**GOOD_ROW, "max_new_tokens": LIMITS.max_new_tokens}] * (
            LIMITS.max_request_new_tokens // LIMITS.max_new_tokens)
        status, body = server.post_rows(rows)
        assert status == 504, body
        assert body["error_code"] == "DEADLINE_EXCEEDED"
        # The next request needs the model lock: were it still held by the runaway
        # generation, this request would wait past its own timeout and get a 504 too.
        status, body = server.post_rows([{**GOOD_ROW, "max_new_tokens": 1}])
        assert status == 200, body
        status, body = server.post_rows([{**GOOD_ROW, "max_new_tokens": 4}] * 2)
        assert status == 200 and len(body["predictions"]) == 2, body
        assert server.proc.poll() is None
    finally:
        stop_server(server.proc)
