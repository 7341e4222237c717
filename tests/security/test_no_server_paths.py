"""1. No server-side paths: an image is base64 or a data:image/...;base64, URL, and a path gets
one message, the same whether the file exists, is an image, is empty or is huge."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.security.helpers import GOOD_IMAGE, GOOD_ROW, Server


def test_a_path_is_refused_alike_whether_or_not_the_file_exists(tiny_server: Server,
                                                                tmp_path: Path) -> None:
    image = tmp_path / "real.png"
    image.write_bytes(base64.b64decode(GOOD_IMAGE))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "huge.png").write_bytes(os.urandom(11 * 1024 * 1024))
    paths = [str(image), str(tmp_path / "notes.txt"), str(tmp_path / "empty.png"),
             str(tmp_path / "huge.png"), str(tmp_path / "missing.png"), "/etc/passwd",
             "/etc/no-such-file", "../../etc/hostname", "./real.png", "~/.ssh/id_rsa",
             "file:///etc/passwd", f"{image}\n"]
    messages = {}
    for path in paths:
        status, body = tiny_server.post_rows([{**GOOD_ROW, "image": path}])
        assert status == 400, (path, body)
        messages[path] = body["message"]
    assert len(set(messages.values())) == 1, messages  # nothing tells the files apart
    message = messages[str(image)]
    assert message.startswith("Invalid request: row 0: 'image' looks like a file path")
    assert str(tmp_path) not in message and "bytes" not in message


def test_base64_and_data_urls_are_the_ways_in(tiny_server: Server) -> None:
    status, body = tiny_server.post_rows([
        GOOD_ROW,
        {**GOOD_ROW, "image": "data:image/png;base64," + GOOD_IMAGE},
        {**GOOD_ROW, "image": "\n".join(GOOD_IMAGE[i:i + 76]  # line-wrapped base64
                                        for i in range(0, len(GOOD_IMAGE), 76))},
    ])
    assert status == 200, body
    answers = [p["answer"] for p in body["predictions"]]
    assert answers[0] == answers[1] == answers[2]  # the same pixels, the same greedy answer
    for image, rule in [("data:text/plain;base64," + GOOD_IMAGE, "data URL must be"),
                        ("http://127.0.0.1/x.png", "not valid base64")]:
        status, body = tiny_server.post_rows([{**GOOD_ROW, "image": image}])
        assert status == 400 and rule in body["message"], body
