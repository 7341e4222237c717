"""MLflow pyfunc wrapper around a saved transformers image-text-to-text model.

Request rows (a DataFrame, one answer per row):

- ``image``: base64 string, ``data:image/...;base64,...`` URL, or a file path readable
  by the serving process (raw bytes and PIL images also work in-process);
- ``question``: the user's text;
- ``history`` (optional): prior ``(question, answer)`` turns, as a list of pairs or a
  JSON string of one; the image belongs to the first turn;
- ``max_new_tokens`` (optional): per-row generation budget, else the ``max_new_tokens``
  param, else :data:`DEFAULT_MAX_NEW_TOKENS`.

Output: a DataFrame with one column, ``answer``. Every row is validated before any
generation; a bad request raises ``MlflowException(INVALID_PARAMETER_VALUE)`` (HTTP 400
from ``mlflow models serve``) naming each bad row and rule, and the model stays usable.

Imports mlflow at module level (it subclasses PythonModel): import this module lazily.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import numbers
import os
import threading
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

HF_ARTIFACT = "hf_model"
DEFAULT_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS_LIMIT = 512  # max_new_tokens must lie in [1, MAX_NEW_TOKENS_LIMIT]
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # encoded image file size (after base64 decoding)
MAX_IMAGE_PIXELS = 4096 * 4096  # width * height, checked from the header before decoding
MAX_PROMPT_TOKENS = 4096  # prompt incl. image tokens; also capped by the model's context
MAX_HISTORY_TURNS = 32
_MAX_PATH_LEN = 4096
_MAX_B64_CHARS = 4 * ((MAX_IMAGE_BYTES + 2) // 3)  # longest base64 text within MAX_IMAGE_BYTES

INPUT_COLUMNS = ("image", "question", "history", "max_new_tokens")


EXAMPLE_QUESTION = "What is in the image?"
EXAMPLE_MAX_NEW_TOKENS = 8


def example_image_base64(size: int = 16) -> str:
    """A tiny PNG (red square on white), base64-encoded: the logged input example's image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), "red")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def example_input() -> pd.DataFrame:
    """One request row as clients send it; logged with every VLM version."""
    return pd.DataFrame(
        {
            "image": [example_image_base64()],
            "question": [EXAMPLE_QUESTION],
            "max_new_tokens": [EXAMPLE_MAX_NEW_TOKENS],
        }
    )


class RequestError(ValueError):
    """One rule broken by one row (or by the request's params)."""


def _invalid(problems: list[str]) -> MlflowException:
    return MlflowException(
        "Invalid request: " + "; ".join(problems), error_code=INVALID_PARAMETER_VALUE
    )


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are not missing
        return False


def _image_from_bytes(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise RequestError(
            f"image is {len(data)} bytes, over the limit of {MAX_IMAGE_BYTES} bytes"
        )
    if not data:
        raise RequestError("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            _check_pixels(img.size)
            return img.convert("RGB")
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(f"image is over the limit of {MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RequestError(f"'image' is not a decodable image ({type(e).__name__})") from None


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(
            f"image is {width}x{height} = {width * height} pixels, "
            f"over the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError("'image' data URL must be of the form data:<type>;base64,<data>")
    text = "".join(text.split())  # tolerate line-wrapped base64
    if len(text) > _MAX_B64_CHARS:
        raise RequestError(
            f"image is about {len(text) * 3 // 4} bytes, over the limit of {MAX_IMAGE_BYTES} bytes"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            "'image' is not valid base64 (expected base64, a base64 data URL or a file path)"
        ) from None


def load_image(value: Any) -> Any:
    """A PIL RGB image from a file path, raw bytes, or (data-URL) base64 string.

    Raises :class:`RequestError` for anything that is not an image within the size limits.
    """
    from PIL import Image

    if isinstance(value, Image.Image):
        _check_pixels(value.size)
        return value.convert("RGB")
    if isinstance(value, bytes | bytearray | memoryview):
        return _image_from_bytes(bytes(value))
    if not isinstance(value, str):
        raise RequestError(f"'image' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError("'image' is empty")
    if not value.startswith("data:") and len(value) <= _MAX_PATH_LEN and os.path.isfile(value):
        size = os.path.getsize(value)
        if size > MAX_IMAGE_BYTES:
            raise RequestError(f"image is {size} bytes, over the limit of {MAX_IMAGE_BYTES} bytes")
        with open(value, "rb") as f:
            return _image_from_bytes(f.read())
    return _image_from_bytes(_decode_base64(value))


def parse_history(value: Any) -> list[tuple[str, str]]:
    """Prior ``(question, answer)`` turns from a list of pairs or its JSON string."""
    if _missing(value):
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RequestError("'history' is not valid JSON") from None
    if hasattr(value, "tolist"):  # numpy arrays from the schema enforcement
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise RequestError("'history' must be a list of [question, answer] pairs")
    if len(value) > MAX_HISTORY_TURNS:
        raise RequestError(
            f"'history' has {len(value)} turns, over the limit of {MAX_HISTORY_TURNS}"
        )
    turns = []
    for i, turn in enumerate(value):
        if hasattr(turn, "tolist"):
            turn = turn.tolist()
        if (
            not isinstance(turn, list | tuple)
            or len(turn) != 2
            or not all(isinstance(t, str) for t in turn)
        ):
            raise RequestError(f"'history' turn {i} must be a [question, answer] pair of strings")
        turns.append((turn[0], turn[1]))
    return turns


def parse_max_new_tokens(value: Any, name: str = "'max_new_tokens'") -> int:
    """An integer in ``[1, MAX_NEW_TOKENS_LIMIT]`` (integral floats from JSON are accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) or not isinstance(value, numbers.Integral):
        if not math.isfinite(float(value)) or float(value) != int(value):
            raise RequestError(f"{name} must be an integer, got {value!r}")
    tokens = int(value)
    if not 1 <= tokens <= MAX_NEW_TOKENS_LIMIT:
        raise RequestError(f"{name} is {tokens}, outside the range [1, {MAX_NEW_TOKENS_LIMIT}]")
    return tokens


class VLMPyfunc(mlflow.pyfunc.PythonModel):
    """Answers ``question`` about ``image`` for each row with greedy decoding."""

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None
        self.encoder: Any = None
        self._lock: Any = None  # created on load: locks do not pickle

    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        import components.model.fusion  # noqa: F401 - registers SPHINX's fused tower type
        from components.model.chat import ChatEncoder

        path = context.artifacts[HF_ARTIFACT]
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).eval()
        # prompts are laid out exactly as in training and evaluation, for every architecture
        self.encoder = ChatEncoder(self.processor, max_length=MAX_PROMPT_TOKENS)
        self._lock = threading.Lock()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        default_tokens = DEFAULT_MAX_NEW_TOKENS
        if not _missing((params or {}).get("max_new_tokens")):
            try:
                default_tokens = parse_max_new_tokens(
                    params["max_new_tokens"], "param 'max_new_tokens'"
                )
            except RequestError as e:
                raise _invalid([str(e)]) from None
        requests, problems = [], []
        for i, row in enumerate(model_input.to_dict("records")):
            try:
                requests.append(self._parse_row(row, default_tokens))
            except RequestError as e:
                problems.append(f"row {i}: {e}")
        if problems:  # nothing is generated for a request with any bad row
            raise _invalid(problems)
        encoded, problems = [], []
        for i, (image, question, history, tokens) in enumerate(requests):
            try:
                encoded.append((self.encode(image, question, history, tokens), tokens))
            except RequestError as e:
                problems.append(f"row {i}: {e}")
        if problems:
            raise _invalid(problems)
        return pd.DataFrame({"answer": [self.generate(inputs, n) for inputs, n in encoded]})

    @staticmethod
    def _parse_row(row: dict[str, Any], default_tokens: int) -> tuple[Any, str, list, int]:
        for field in ("image", "question"):
            if _missing(row.get(field)):
                raise RequestError(f"missing field '{field}'")
        question = row["question"]
        if not isinstance(question, str):
            raise RequestError(f"'question' must be a string, got {type(question).__name__}")
        if not question.strip():
            raise RequestError("'question' is empty")
        history = parse_history(row.get("history"))
        tokens = row.get("max_new_tokens")
        tokens = default_tokens if _missing(tokens) else parse_max_new_tokens(tokens)
        return load_image(row["image"]), question, history, tokens

    def prompt_limit(self, max_new_tokens: int) -> int:
        """Most prompt tokens allowed: MAX_PROMPT_TOKENS, and room for the answer in context."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        context = getattr(text_config, "max_position_embeddings", None)
        limit = MAX_PROMPT_TOKENS
        if context:
            limit = min(limit, int(context) - max_new_tokens)
        return limit

    def encode(
        self, image: Any, question: str, history: list[tuple[str, str]], max_new_tokens: int
    ) -> Any:
        """Processor inputs for one conversation; the image goes with the first user turn."""
        turns = [*history, (question, None)]
        messages = []
        for n, (q, a) in enumerate(turns):
            content = [{"type": "text", "text": q}]
            messages.append({"role": "user", "content": [{"type": "image"}] * (n == 0) + content})
            if a is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
        with self._lock or threading.Lock():  # fast tokenizers are not thread-safe
            encoded = self.encoder.prompt(messages, [image])
        n_tokens = len(encoded.input_ids)
        limit = self.prompt_limit(max_new_tokens)
        if n_tokens > limit:
            raise RequestError(f"prompt is {n_tokens} tokens, over the limit of {limit} tokens")
        return encoded

    def generate(self, encoded: Any, max_new_tokens: int) -> str:
        """Greedy answer for one encoded prompt; only new tokens are decoded."""
        import torch

        from components.model.chat import collate

        tokenizer = self.encoder.tokenizer
        batch = collate([encoded], tokenizer.pad_token_id, "left")
        batch.pop("labels")
        batch = {k: v.to(self.model.device, dtype=self.model.dtype) if v.is_floating_point()
                 else v.to(self.model.device) for k, v in batch.items()}
        # One generation at a time: the scoring server calls predict from several threads.
        with self._lock or threading.Lock(), torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=tokenizer.eos_token_id)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def answer(
        self,
        image: Any,
        question: str,
        max_new_tokens: int,
        history: list[tuple[str, str]] | None = None,
    ) -> str:
        """Greedy answer for one image/question pair (no request validation of the values)."""
        return self.generate(self.encode(image, question, history or [], max_new_tokens),
                             max_new_tokens)
