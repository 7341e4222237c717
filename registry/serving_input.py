"""Served request rows, checked against the caps before any pixel is decoded or token generated.

An image arrives as base64 or a ``data:image/...;base64,`` URL (raw bytes or a PIL image
in-process), never as a path: the server opens no file a client names. Its format (PNG, JPEG,
WEBP) and pixel count are read from the first bytes by this module, so Pillow only ever sees
an allowed format whose size is already known to be within the cap. Text may not carry the
model's special tokens: a literal ``<image>`` would add an image slot the request has no
pixels for, an ``<end_of_utterance>`` would forge a turn.
No MLflow here: the pyfunc turns :class:`RequestRejected` into the HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import numbers
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .serving_limits import ALLOWED_IMAGE_FORMATS, LIMITS, ServingLimits

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64", re.IGNORECASE)
_PATH_LIKE = re.compile(r"^(/|~|\.{1,2}[/\\]|file:|[A-Za-z]:[/\\]|\\\\)")
_NOT_BASE64 = "'image' is not valid base64 (expected base64 or a data:image/...;base64, URL)"
_PATH_REFUSED = ("'image' looks like a file path: send the image itself, base64 or as a "
                 "data:image/...;base64, URL (the server opens no files)")


class RequestError(ValueError):
    """One rule broken by one row (or by the request as a whole)."""


class RequestRejected(ValueError):
    """Every rule a request broke, each naming its row: nothing of it is generated."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("Invalid request: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ImageHeader:
    """What the first bytes of an image file say: its format and size, nothing decoded."""

    format: str
    width: int
    height: int


@dataclass(frozen=True)
class RowRequest:
    """One checked row: the image still encoded (decoded just before its generation)."""

    image: Any  # bytes of a checked file, or a PIL image given in-process
    header: ImageHeader | None  # None for a PIL image
    question: str
    history: list[tuple[str, str]]
    max_new_tokens: int


# ---- image headers -----------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise RequestError("'image' has a malformed PNG header")
    return struct.unpack(">II", data[16:24])


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a segment


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The frame size of the first start-of-frame segment (what Pillow reads too)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            break
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise RequestError("'image' has a malformed JPEG header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    raise RequestError("'image' has a malformed WEBP header")


def image_format(data: bytes) -> str | None:
    """PNG, JPEG or WEBP from the file's signature; None for any other content."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


_SIZE_READERS = {"PNG": _png_size, "JPEG": _jpeg_size, "WEBP": _webp_size}
assert set(_SIZE_READERS) == set(ALLOWED_IMAGE_FORMATS)


def check_pixels(width: int, height: int, limits: ServingLimits = LIMITS) -> None:
    if width < 1 or height < 1:
        raise RequestError(f"image is {width}x{height} pixels: it has no pixels")
    if width * height > limits.max_image_pixels:
        raise RequestError(f"image is {width}x{height} = {width * height} pixels, over the limit "
                           f"of {limits.max_image_pixels} pixels (max_image_pixels)")


def read_image_header(data: bytes, limits: ServingLimits = LIMITS) -> ImageHeader:
    """Format and size of an encoded image within the byte and pixel caps; decodes nothing."""
    if not data:
        raise RequestError("image is empty")
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"image is {len(data)} bytes, over the limit of "
                           f"{limits.max_image_bytes} bytes (max_image_bytes)")
    fmt = image_format(data)
    if fmt is None:
        raise RequestError("'image' is not a PNG, JPEG or WEBP file (judged from its first bytes)")
    width, height = _SIZE_READERS[fmt](data)
    check_pixels(width, height, limits)
    return ImageHeader(fmt, width, height)


def decode_image(data: bytes, header: ImageHeader) -> Any:
    """The RGB pixels of a checked file; Pillow may only read ``header.format``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as img:
            if img.size != (header.width, header.height):
                raise RequestError(f"'image' {header.format} header says "
                                   f"{header.width}x{header.height}, its frame is "
                                   f"{img.size[0]}x{img.size[1]}")
            return img.convert("RGB")
    except RequestError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error,
            Image.DecompressionBombError) as e:
        raise RequestError(f"'image' is not a decodable {header.format} file "
                           f"({type(e).__name__})") from None


def image_bytes_from_text(text: str, limits: ServingLimits = LIMITS) -> bytes:
    """The file bytes of a base64 string or base64 data URL; anything else is refused,
    with a message that depends on the string alone (the server opens no file it names)."""
    data_url = text.startswith("data:")
    if data_url:
        header, sep, text = text.partition(",")
        if not sep or not _DATA_URL.fullmatch(header):
            raise RequestError("'image' data URL must be data:image/<type>;base64,<data>")
    compact = "".join(text.split())  # line-wrapped base64 is still base64
    if len(compact) > limits.max_base64_chars:
        raise RequestError(f"image is about {len(compact) * 3 // 4} bytes, over the limit of "
                           f"{limits.max_image_bytes} bytes (max_image_bytes)")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        # base64 may start with "/" too ("/9j/" is a JPEG): a path is only named once it failed
        path_like = not data_url and _PATH_LIKE.match(text.strip())
        raise RequestError(_PATH_REFUSED if path_like else _NOT_BASE64) from None


def checked_image(value: Any, limits: ServingLimits = LIMITS) -> tuple[Any, ImageHeader | None]:
    """A row's image as (checked file bytes, header), or (PIL image, None) in-process."""
    from PIL import Image

    if isinstance(value, Image.Image):
        check_pixels(*value.size, limits)
        return value, None
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        if not value.strip():
            raise RequestError("'image' is empty")
        data = image_bytes_from_text(value, limits)
    else:
        raise RequestError(f"'image' must be a base64 string, got {type(value).__name__}")
    return data, read_image_header(data, limits)


# ---- text, history, tokens ---------------------------------------------------------------


class SpecialTokens:
    """The model's special and added tokens, found in text with one regular expression."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = tuple(sorted({t for t in tokens if t and t.strip()}, key=len, reverse=True))
        self._pattern = (re.compile("|".join(map(re.escape, self.tokens))) if self.tokens
                         else None)

    def first_in(self, text: str) -> str | None:
        found = self._pattern.search(text) if self._pattern else None
        return found.group(0) if found else None


NO_SPECIAL_TOKENS = SpecialTokens(())


def check_text(field: str, value: Any, max_chars: int, cap: str, special: SpecialTokens,
               *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{field} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RequestError(f"{field} is empty")
    if len(value) > max_chars:
        raise RequestError(f"{field} is {len(value)} characters, over the limit of {max_chars} "
                           f"({cap})")
    token = special.first_in(value)
    if token is not None:
        raise RequestError(f"{field} contains the special token {token!r}: the model's special "
                           "tokens are not allowed in text")
    return value


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are not missing
        return False


def parse_history(value: Any, special: SpecialTokens = NO_SPECIAL_TOKENS,
                  limits: ServingLimits = LIMITS) -> list[tuple[str, str]]:
    """Prior ``(question, answer)`` turns from a list of pairs or its JSON string."""
    if _missing(value):
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        if len(value) > 2 * limits.max_history_chars:  # JSON quoting at most doubles it
            raise RequestError(f"'history' is {len(value)} characters, over the limit of "
                               f"{limits.max_history_chars} (max_history_chars)")
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise RequestError("'history' is not valid JSON") from None
    if hasattr(value, "tolist"):  # numpy arrays from the schema enforcement
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise RequestError("'history' must be a list of [question, answer] pairs")
    if len(value) > limits.max_history_turns:
        raise RequestError(f"'history' has {len(value)} turns, over the limit of "
                           f"{limits.max_history_turns} (max_history_turns)")
    turns, chars = [], 0
    for i, turn in enumerate(value):
        if hasattr(turn, "tolist"):
            turn = turn.tolist()
        if (not isinstance(turn, list | tuple) or len(turn) != 2
                or not all(isinstance(t, str) for t in turn)):
            raise RequestError(f"'history' turn {i} must be a [question, answer] pair of strings")
        chars += len(turn[0]) + len(turn[1])
        if chars > limits.max_history_chars:
            raise RequestError(f"'history' has over {limits.max_history_chars} characters "
                               "(max_history_chars)")
        for part, text in zip(("question", "answer"), turn, strict=True):
            check_text(f"'history' turn {i} {part}", text, limits.max_history_chars,
                       "max_history_chars", special, allow_empty=True)
        turns.append((turn[0], turn[1]))
    return turns


def parse_max_new_tokens(value: Any, name: str = "'max_new_tokens'",
                         limits: ServingLimits = LIMITS) -> int:
    """An integer in ``[1, max_new_tokens]`` (integral floats from JSON are accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(f"{name} must be an integer, got {type(value).__name__}")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(float(value)) or float(value) != int(value):
            raise RequestError(f"{name} must be an integer, got {value!r}")
    tokens = int(value)
    if not 1 <= tokens <= limits.max_new_tokens:
        raise RequestError(f"{name} is {tokens}, outside the range [1, {limits.max_new_tokens}] "
                           "(max_new_tokens)")
    return tokens


# ---- the request -------------------------------------------------------------------------


def parse_row(row: dict[str, Any], default_tokens: int, special: SpecialTokens,
              limits: ServingLimits = LIMITS) -> RowRequest:
    for field in ("image", "question"):
        if _missing(row.get(field)):
            raise RequestError(f"missing field '{field}'")
    question = check_text("'question'", row["question"], limits.max_question_chars,
                          "max_question_chars", special)
    history = parse_history(row.get("history"), special, limits)
    tokens = row.get("max_new_tokens")
    tokens = default_tokens if _missing(tokens) else parse_max_new_tokens(tokens, limits=limits)
    image, header = checked_image(row["image"], limits)
    return RowRequest(image, header, question, history, tokens)


def parse_request(model_input: Any, params: dict[str, Any] | None,
                  special: SpecialTokens = NO_SPECIAL_TOKENS,
                  limits: ServingLimits = LIMITS) -> list[RowRequest]:
    """Every row checked (no pixels decoded); raises :class:`RequestRejected` naming each
    broken rule and its row, so a request with any bad row generates nothing."""
    try:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    except (TypeError, ValueError):
        raise RequestRejected(["the request must be rows of image, question [, history, "
                               "max_new_tokens]"]) from None
    if len(frame) > limits.max_rows:
        raise RequestRejected([f"request has {len(frame)} rows, over the limit of "
                               f"{limits.max_rows} rows (max_rows)"])
    default_tokens = limits.default_new_tokens
    if not _missing((params or {}).get("max_new_tokens")):
        try:
            default_tokens = parse_max_new_tokens(params["max_new_tokens"],
                                                  "param 'max_new_tokens'", limits)
        except RequestError as e:
            raise RequestRejected([str(e)]) from None
    rows, problems = [], []
    for i, row in enumerate(frame.to_dict("records")):
        try:
            rows.append(parse_row(row, default_tokens, special, limits))
        except RequestError as e:
            problems.append(f"row {i}: {e}")
    if problems:
        raise RequestRejected(problems)
    total = sum(r.max_new_tokens for r in rows)
    if total > limits.max_request_new_tokens:
        raise RequestRejected([f"the rows' max_new_tokens add up to {total}, over the limit of "
                               f"{limits.max_request_new_tokens} new tokens per request "
                               "(max_request_new_tokens)"])
    return rows
