"""2. Caps, named in one place (registry/serving_limits.py): rows, body bytes (refused before
the body is read), question and history characters, new tokens summed over the rows, image
bytes and pixels. Each refusal is a 4xx naming the cap."""

from __future__ import annotations

import base64
import http.client
import json
import os

from PIL import Image

from registry.serving_limits import LIMITS
from tests.security.helpers import GOOD_ROW, Server, png_b64


def _refused(tiny_server: Server, rows: list[dict], cap: str) -> str:
    status, body = tiny_server.post_rows(rows)
    assert status == 400, body
    assert f"({cap})" in body["message"], body["message"]
    return body["message"]


def test_rows_per_request(tiny_server: Server) -> None:
    message = _refused(tiny_server, [GOOD_ROW] * (LIMITS.max_rows + 1), "max_rows")
    assert f"{LIMITS.max_rows + 1} rows" in message
    status, body = tiny_server.post_rows([GOOD_ROW] * LIMITS.max_rows)
    assert status == 200 and len(body["predictions"]) == LIMITS.max_rows


def test_new_tokens_are_summed_over_the_rows(tiny_server: Server) -> None:
    per_row = LIMITS.max_new_tokens
    rows = [{**GOOD_ROW, "max_new_tokens": per_row}] * (LIMITS.max_request_new_tokens // per_row
                                                        + 1)
    _refused(tiny_server, rows, "max_request_new_tokens")
    _refused(tiny_server, [{**GOOD_ROW, "max_new_tokens": per_row + 1}], "max_new_tokens")


def test_question_and_history_characters(tiny_server: Server) -> None:
    _refused(tiny_server, [{**GOOD_ROW, "question": "x" * (LIMITS.max_question_chars + 1)}],
             "max_question_chars")
    turn = ["q" * 1000, "a" * 1000]
    turns = LIMITS.max_history_chars // 2000 + 1
    _refused(tiny_server, [{**GOOD_ROW, "history": [turn] * turns}], "max_history_chars")
    _refused(tiny_server, [{**GOOD_ROW, "history": [["q", "a"]] * (LIMITS.max_history_turns + 1)}],
             "max_history_turns")


def test_image_bytes_and_pixels(tiny_server: Server) -> None:
    too_big = base64.b64encode(os.urandom(LIMITS.max_image_bytes + 1)).decode()
    _refused(tiny_server, [{**GOOD_ROW, "image": too_big}], "max_image_bytes")
    side = int(LIMITS.max_image_pixels ** 0.5) + 1
    message = _refused(tiny_server, [{**GOOD_ROW, "image": png_b64(Image.new("1", (side, side)))}],
                       "max_image_pixels")
    assert f"{side}x{side}" in message


def test_body_cap_is_enforced_before_the_body_is_read(tiny_server: Server) -> None:
    # Content-Length over the cap with Expect: 100-continue: the server must answer 413 at
    # once, without asking for the body (no 100 Continue), so not a byte of it is sent.
    reply = tiny_server.post(b"", declared_length=LIMITS.max_body_bytes + 1, expect_continue=True)
    assert reply.status == 413, reply
    assert "(max_body_bytes)" in json.loads(reply.body)["message"]
    reply = tiny_server.post(b"", declared_length=10**12, expect_continue=True)
    assert reply.status == 413, reply
    # a body within the cap is asked for and answered
    body = json.dumps({"dataframe_records": [GOOD_ROW]}).encode()
    assert tiny_server.post(body, expect_continue=True).status == 200


def test_a_chunked_body_is_counted_as_it_arrives(tiny_server: Server) -> None:
    def chunked(chunks) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=120)
        try:
            conn.request("POST", "/invocations", body=iter(chunks), encode_chunked=True,
                         headers={"Content-Type": "application/json"})
            return conn.getresponse().status
        except OSError:  # the server answered 413 and closed while the upload went on
            return None
        finally:
            conn.close()

    body = json.dumps({"dataframe_records": [GOOD_ROW]}).encode()
    assert chunked([body[:10], body[10:]]) == 200
    mib = b" " * (1024 * 1024)
    assert chunked([b'{"dataframe_records": [', *[mib] * (LIMITS.max_body_bytes // len(mib) + 1),
                    b"]}"]) in (413, None)
    assert tiny_server.post_rows([GOOD_ROW])[0] == 200  # and it goes on serving


def test_only_json_bodies_reach_the_parser(tiny_server: Server) -> None:
    for content_type in ("text/csv", "application/vnd.apache.parquet", "text/plain"):
        reply = tiny_server.post(b"image,question\n/etc/passwd,hi\n", content_type=content_type)
        assert reply.status == 415, (content_type, reply)
    for body, rule in [(b"[" * 100_000, "nested too deeply"),
                       (b'{"dataframe_records": [{"max_new_tokens": ' + b"9" * 5000 + b"}]}",
                        "not readable JSON"),
                       (b'{"dataframe_records": [' + b"{}," * LIMITS.max_json_items + b"{}]}",
                        "(max_json_items)"),
                       (b'{"dataframe_records": [', "not valid JSON")]:
        reply = tiny_server.post(body)
        assert reply.status == 400 and rule in json.loads(reply.body)["message"], reply
