"""Helpers of the security suite: tiny VLMs registered and served by `vlmforge serve`'s own
start-up (flows.commands.serve.start_server) on 127.0.0.1, and a client for them."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

import registry
from flows.bench.soak import Reply, post, register_tiny_vlm
from flows.commands.serve import free_port, start_server, stop_server, wait_until_ready


@dataclass
class Server:
    """A running server: its port, process and log."""

    port: int
    proc: subprocess.Popen
    log: Path

    def post_rows(self, rows: list[dict], params: dict | None = None) -> tuple[int, dict]:
        body = {"dataframe_records": rows, **({"params": params} if params else {})}
        reply = self.post(json.dumps(body).encode())
        try:
            return reply.status, json.loads(reply.body)
        except ValueError:
            return reply.status, {"raw": reply.body.decode("utf-8", "replace")}

    def post(self, body: bytes, **kwargs) -> Reply:
        return post(self.port, body, **kwargs)


def png_b64(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


GOOD_IMAGE = png_b64(Image.new("RGB", (48, 40), (200, 30, 30)))
GOOD_ROW = {"image": GOOD_IMAGE, "question": "What colour is the circle?", "max_new_tokens": 2}


def register_in(store: Path, workdir: Path, **build) -> str:
    """A tiny VLM registered in ``store``: its ``models:/name/version`` URI."""
    registry.configure(store)
    return register_tiny_vlm(f"vlm-sec-{uuid.uuid4().hex[:6]}", workdir, **build)


def serve(store: Path, model_uri: str, log: Path, timeout_s: int = 60) -> Server:
    """Start `vlmforge serve`'s server for ``model_uri`` and wait until it answers /ping."""
    registry.configure(store)
    port = free_port()
    with log.open("wb") as out:
        proc = start_server(model_uri, port, timeout_s=timeout_s, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        wait_until_ready(proc, port)
    except (RuntimeError, TimeoutError):
        stop_server(proc)
        pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
    return Server(port, proc, log)
