"""Every cap of the serving contract, in one place with names.

A request over any cap is refused with a 4xx that names the row and the cap, before the work
the cap protects is done. The caps bound what one request can cost (memory, CPU time under the
model lock), so a server's peak memory has a bound too (:meth:`ServingLimits.memory_bound`).
Standard library only: the CLI, the benches and the server all read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServingLimits:
    """The caps of one served request (names as in error messages and the README)."""

    max_body_bytes: int = 16 * MIB  # the HTTP body, refused before it is read (vlmforge serve)
    max_rows: int = 16  # rows per request
    max_question_chars: int = 4_000  # one row's question
    max_history_turns: int = 32  # one row's prior (question, answer) turns
    max_history_chars: int = 16_000  # all of one row's history turns together
    default_new_tokens: int = 64  # a row's generation budget when it names none
    max_new_tokens: int = 512  # one row's max_new_tokens
    max_request_new_tokens: int = 1_024  # the sum of max_new_tokens over a request's rows
    max_prompt_tokens: int = 4_096  # one row's prompt incl. image tokens (and the model's context)
    max_image_bytes: int = 10 * MIB  # one encoded image file, after base64 decoding
    max_image_pixels: int = 2048 * 2048  # width * height, read from the header before decoding
    max_concurrent_requests: int = 16  # connections the server admits at once, then 503
    request_timeout_s: int = 60  # then 504, and the request's generation stops

    @property
    def max_base64_chars(self) -> int:
        """Longest base64 text whose decoded bytes can be within ``max_image_bytes``."""
        return 4 * ((self.max_image_bytes + 2) // 3)

    @property
    def max_json_items(self) -> int:
        """Most ``,`` ``[`` ``{`` a body may hold, so the Python objects its parse makes are
        bounded: as many as a request within the row and text caps can need, text included."""
        per_row = self.max_question_chars + self.max_history_chars + 4 * self.max_history_turns
        return self.max_rows * (per_row + 64)

    def memory_bound(self, idle_rss_bytes: int, parse_threads: int | None = None) -> int:
        """Most resident bytes a server can reach under any traffic these caps admit.

        Each admitted request holds its body twice (the guard's buffer, Starlette's copy);
        each parsing thread (asyncio's default pool, where the guard's trial parse and
        MLflow's parse and predict run) holds a body's JSON text, decoded image bytes and
        DataFrame (about three bodies) plus at most ``max_json_items`` Python objects (~100
        bytes each); pixels are decoded one image at a time, under the model lock, at about
        14 bytes per pixel (RGB plus the processor's float copies, measured at 4096x4096).
        """
        threads = parse_threads or min(32, (os.cpu_count() or 1) + 4)
        bodies = self.max_concurrent_requests * 2 * self.max_body_bytes
        parsing = threads * (3 * self.max_body_bytes + 100 * self.max_json_items)
        image = self.max_image_bytes + 14 * self.max_image_pixels
        return idle_rss_bytes + bodies + parsing + image


LIMITS = ServingLimits()
ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # decided from the first bytes, never by Pillow
