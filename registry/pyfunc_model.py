"""MLflow pyfunc wrapper around a saved transformers image-text-to-text model.

Request rows (a DataFrame, one answer per row), checked by :mod:`registry.serving_input`
against :data:`registry.serving_limits.LIMITS`:

- ``image``: base64 string or ``data:image/...;base64,...`` URL of a PNG, JPEG or WEBP file
  (raw bytes and PIL images also work in-process); never a path;
- ``question``: the user's text, without the model's special tokens;
- ``history`` (optional): prior ``(question, answer)`` turns, as a list of pairs or a
  JSON string of one; the image belongs to the first turn;
- ``max_new_tokens`` (optional): per-row generation budget, else the ``max_new_tokens``
  param, else ``LIMITS.default_new_tokens``.

Output: a DataFrame with one column, ``answer``. Every row is checked before any pixel is
decoded or token generated; a bad request raises ``MlflowException(INVALID_PARAMETER_VALUE)``
(HTTP 400) naming each bad row and rule, never a stack trace. Rows are then answered one at
a time under the model lock, each image decoded just before its generation. Generation
stops at the request's deadline (its server timeout), so a timed-out request frees the lock.

Logged as code (:mod:`registry.served_model`), never pickled. Imports mlflow at module level
(it subclasses PythonModel): import this module lazily.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
)

from .serving_input import (
    RequestError,
    RequestRejected,
    RowRequest,
    SpecialTokens,
    decode_image,
    parse_request,
)
from .serving_limits import LIMITS

HF_ARTIFACT = "hf_model"
EXAMPLE_QUESTION = "What is in the image?"
EXAMPLE_MAX_NEW_TOKENS = 8
_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
_SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server
_logger = logging.getLogger(__name__)

# time.monotonic() by which the request being predicted must be answered: set by the guard of
# `vlmforge serve` (registry.serving_app) when the request arrives; the copy of the context
# asyncio.to_thread makes carries it into predict's thread.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("vlmforge_request_deadline", default=None)


class DeadlineExceeded(Exception):
    """The request's time is up: the server has already answered it with a 504."""


def request_deadline() -> float | None:
    """The current request's deadline; under plain `mlflow models serve` (no guard) its
    timeout counted from now; None in-process, where nothing times out."""
    deadline = REQUEST_DEADLINE.get()
    if deadline is None and os.environ.get(_SERVING_ENV, "").lower() == "true":
        deadline = time.monotonic() + float(os.environ.get(_TIMEOUT_ENV, LIMITS.request_timeout_s))
    return deadline


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


def special_tokens(processor: Any) -> SpecialTokens:
    """Every special or added token of the model's tokenizer, and the image placeholders."""
    from components.model.chat import IMAGE_PLACEHOLDERS

    tokenizer = processor.tokenizer
    names = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab(), *IMAGE_PLACEHOLDERS}
    for attr in ("image_token", "fake_image_token", "global_image_tag", "global_image_token"):
        value = getattr(processor, attr, None)
        value = getattr(value, "content", value)  # an AddedToken
        if isinstance(value, str):
            names.add(value)
    return SpecialTokens(names)


def _deadline_stop(deadline: float) -> Any:
    """A stopping criterion that ends generation (every row) once ``deadline`` has passed."""
    import torch
    from transformers import StoppingCriteria

    class _Deadline(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> Any:
            done = time.monotonic() >= deadline
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool,
                              device=input_ids.device)

    return _Deadline()


class VLMPyfunc(mlflow.pyfunc.PythonModel):
    """Answers ``question`` about ``image`` for each row with greedy decoding."""

    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None
        self.encoder: Any = None
        self.special = SpecialTokens(())
        # One row at a time holds the model: decoding, encoding (fast tokenizers are not
        # thread-safe) and generation; MLflow's server calls predict from several threads.
        self._lock = threading.Lock()

    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        import components.model.fusion  # noqa: F401 - registers SPHINX's fused tower type
        from components.model.chat import ChatEncoder

        path = context.artifacts[HF_ARTIFACT]
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
        # safetensors only: a pickled weights file in the artifact is refused, not loaded
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False).eval()
        # prompts are laid out exactly as in training and evaluation, for every architecture
        self.encoder = ChatEncoder(self.processor, max_length=LIMITS.max_prompt_tokens)
        self.special = special_tokens(self.processor)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        deadline = request_deadline()
        try:
            rows = parse_request(model_input, params, self.special)
            answers = [self._answer_row(i, row, deadline) for i, row in enumerate(rows)]
        except RequestRejected as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        except DeadlineExceeded:
            raise MlflowException("the request ran past its deadline (the server's request "
                                  "timeout); its generation was stopped",
                                  error_code=DEADLINE_EXCEEDED) from None
        except Exception:
            _logger.exception("internal error while answering a request")
            raise MlflowException("internal error while answering the request (details are "
                                  "in the server's log)", error_code=INTERNAL_ERROR) from None
        return pd.DataFrame({"answer": answers})

    def _answer_row(self, index: int, row: RowRequest, deadline: float | None) -> str:
        with self._model_turn(deadline):
            try:
                image = row.image if row.header is None else decode_image(row.image, row.header)
                encoded = self._encode(image, row.question, row.history, row.max_new_tokens)
            except RequestError as e:
                raise RequestRejected([f"row {index}: {e}"]) from None
            return self._generate(encoded, row.max_new_tokens, deadline)

    @contextmanager
    def _model_turn(self, deadline: float | None) -> Iterator[None]:
        """Hold the model lock; give up at ``deadline`` rather than wait past it."""
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise DeadlineExceeded
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded
            yield
        finally:
            self._lock.release()

    def prompt_limit(self, max_new_tokens: int) -> int:
        """Most prompt tokens allowed: max_prompt_tokens, and room for the answer in context."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        context = getattr(text_config, "max_position_embeddings", None)
        limit = LIMITS.max_prompt_tokens
        if context:
            limit = min(limit, int(context) - max_new_tokens)
        return limit

    def _encode(
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
        try:
            encoded = self.encoder.prompt(messages, [image])
        except (ValueError, OSError) as e:  # the processor's refusal of these pixels
            raise RequestError(f"'image' could not be prepared for the model "
                               f"({type(e).__name__})") from None
        n_tokens = len(encoded.input_ids)
        limit = self.prompt_limit(max_new_tokens)
        if n_tokens > limit:
            raise RequestError(f"prompt is {n_tokens} tokens, over the limit of {limit} tokens "
                               "(max_prompt_tokens and the model's context)")
        return encoded

    def _generate(self, encoded: Any, max_new_tokens: int, deadline: float | None) -> str:
        """Greedy answer for one encoded prompt, stopped at ``deadline``; new tokens only."""
        import torch
        from transformers import StoppingCriteriaList

        from components.model.chat import collate

        tokenizer = self.encoder.tokenizer
        batch = collate([encoded], tokenizer.pad_token_id, "left")
        batch.pop("labels")
        batch = {k: v.to(self.model.device, dtype=self.model.dtype) if v.is_floating_point()
                 else v.to(self.model.device) for k, v in batch.items()}
        stop = None if deadline is None else StoppingCriteriaList([_deadline_stop(deadline)])
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=tokenizer.eos_token_id,
                                      stopping_criteria=stop)
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def answer(
        self,
        image: Any,
        question: str,
        max_new_tokens: int,
        history: list[tuple[str, str]] | None = None,
    ) -> str:
        """Greedy answer for one image/question pair (no request checks of the values)."""
        with self._model_turn(None):
            encoded = self._encode(image, question, history or [], max_new_tokens)
            return self._generate(encoded, max_new_tokens, None)
