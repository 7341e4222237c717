"""The ASGI app `vlmforge serve` runs: MLflow's own scoring server behind a request guard.

The scoring app is ``mlflow.pyfunc.scoring_server.init(model)``, exactly what
`mlflow models serve` runs under uvicorn. MLflow 3's server reads every body whole
(``await request.body()``) with no size limit and also parses CSV and Parquet bodies (whose
parse errors come back with a stack trace, and a small Parquet body can inflate to any size),
so :class:`RequestGuard` sits in front of it and, for ``POST /invocations``:

- refuses a content type other than ``application/json`` (415) before reading the body;
- refuses a body over ``LIMITS.max_body_bytes`` (413) from its Content-Length before reading
  it (a client that sent ``Expect: 100-continue`` never uploads it), or as soon as a chunked
  body passes the cap;
- refuses a body MLflow's JSON parser would answer with a 500 (too deep, over-long
  integers) or that would parse into many times its size (``LIMITS.max_json_items``);
- answers errors plainly: no stack trace (MLflow attaches one to some), and a predict
  error's message without MLflow's dump of the request's rows before it;
- stamps the request's deadline (:data:`registry.pyfunc_model.REQUEST_DEADLINE`) on arrival,
  so its generation stops when its timeout's 504 goes out, and a body still arriving then
  gets a 408.

Before serving, :func:`verified_model_dir` downloads the version and checks that the code
MLflow runs on load (``served_model.py``, and ``code/``, which goes first on sys.path) is the
code registered with it (:func:`registry.models.code_digest`, recorded in the tracking
store), so writing to the artifact store alone cannot change the server's code. The
packages themselves are this checkout's (plain `mlflow models serve` runs the version's
copies). Run with ``uvicorn --factory registry.serving_app:build_app`` (see flows/commands/serve.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .serving_limits import LIMITS, ServingLimits

MODEL_URI_ENV = "VLMFORGE_SERVE_MODEL_URI"
TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # MLflow's name: its server reads it too
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
_logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class UnverifiedModel(RuntimeError):
    """The model's code or loader is not what was registered: it is not served."""


async def _reply(send: Send, status: int, message: str) -> None:
    """An error in MLflow's own shape, closing the connection (the body may be unread)."""
    body = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def json_problem(body: bytes, limits: ServingLimits = LIMITS) -> str | None:
    """Why MLflow's parser must not see ``body``, or None: over ``max_json_items`` (a small
    body of tiny values would parse into many times its size), not JSON, or JSON that Python's
    parser cannot take (nesting past the recursion limit, integers of over 4300 digits),
    which MLflow's server would answer with a 500."""
    items = body.count(b",") + body.count(b"[") + body.count(b"{")
    if items > limits.max_json_items:
        return (f"request body has {items} JSON items (',' '[' '{{'), over the limit of "
                f"{limits.max_json_items} (max_json_items)")
    try:
        json.loads(body)
    except RecursionError:
        return "request body is JSON nested too deeply to read"
    except json.JSONDecodeError as e:
        return f"request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except ValueError as e:  # over-long integers, bytes that are not UTF-8
        return f"request body is not readable JSON ({type(e).__name__})"
    return None


_PREDICT_PREAMBLE = "\nError: "  # MLflow prefixes a predict error with a dump of the rows


def plain_error(body: bytes, status: int) -> bytes:
    """An error body of MLflow's as JSON without what a client should not get: the stack
    trace some of its errors carry, and the dump of the request's rows before a predict
    error. A text body (its 504's) becomes ``{"error_code", "message"}`` like the others."""
    try:
        error = json.loads(body)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        code = {504: "DEADLINE_EXCEEDED"}.get(status, "INTERNAL_ERROR" if status >= 500
                                              else "BAD_REQUEST")
        return json.dumps({"error_code": code,
                           "message": body.decode("utf-8", "replace")}).encode()
    trace = error.pop("stack_trace", None)
    if trace:
        _logger.warning("stack trace withheld from the client:\n%s", trace)
    message = error.get("message")
    if isinstance(message, str) and message.startswith("Failed to predict data '"):
        error["message"] = message.partition(_PREDICT_PREAMBLE)[2] or message
    return json.dumps(error).encode()


def _plain_errors(send: Send) -> Send:
    """``send`` with every JSON error response passed through :func:`plain_error`."""
    held: dict[str, Any] = {}

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"], held["body"] = message, []
            return
        if "start" not in held or message["type"] != "http.response.body":
            await send(message)
            return
        held["body"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start = held.pop("start")
        body = plain_error(b"".join(held.pop("body")), start["status"])
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-length", b"content-type")]
        await send({**start, "headers": [*headers, (b"content-type", b"application/json"),
                                         (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return sending


class RequestGuard:
    """ASGI middleware: content type, body cap, plain errors and deadline of scoring requests."""

    def __init__(self, app: Any, limits: ServingLimits = LIMITS,
                 timeout_s: float | None = None) -> None:
        from .pyfunc_model import REQUEST_DEADLINE

        self.app = app
        self.limits = limits
        self.deadline_var = REQUEST_DEADLINE
        self.timeout_s = float(timeout_s if timeout_s is not None
                               else os.environ.get(TIMEOUT_ENV, limits.request_timeout_s))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("path") != "/invocations"
                or scope.get("method") != "POST"):
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        body = await self._admitted_body(scope, receive, send, deadline)
        if body is None:
            return
        token = self.deadline_var.set(deadline)
        try:
            await self.app(scope, _replay(body, receive), _plain_errors(send))
        finally:
            self.deadline_var.reset(token)

    async def _admitted_body(self, scope: Scope, receive: Receive, send: Send,
                             deadline: float) -> bytes | None:
        """The body if the request may reach MLflow; else None, the refusal sent."""
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        media_type = headers.get(b"content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            await _reply(send, 415, f"content type must be application/json, got "
                                    f"{media_type or 'none'!r}")
            return None
        cap = self.limits.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _reply(send, 413, f"request body is {declared} bytes, over the limit of {cap} "
                                    "bytes (max_body_bytes)")
            return None
        try:
            body = await asyncio.wait_for(_read_body(receive, cap),
                                          max(0.0, deadline - time.monotonic()))
        except BodyTooLarge:
            await _reply(send, 413, f"request body is over the limit of {cap} bytes "
                                    "(max_body_bytes)")
            return None
        except TimeoutError:
            await _reply(send, 408, f"request body did not arrive within {self.timeout_s:g} s")
            return None
        except ClientGone:
            return None
        problem = await asyncio.to_thread(json_problem, body, self.limits)
        if problem:
            await _reply(send, 400, problem)
            return None
        return body


# ---- the model: resolved in the registry, checked against the tracking store -----------------


def _model_id(model_uri: str) -> str:
    """The LoggedModel behind ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or
    ``models:/<model id>``."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        raise UnverifiedModel(f"{model_uri!r}: only models:/ URIs can be checked and served")
    ref = model_uri.removeprefix("models:/").rstrip("/")
    if ref.startswith("m-") and "/" not in ref and "@" not in ref:
        return ref
    client = MlflowClient()
    if "@" in ref:
        name, _, alias = ref.partition("@")
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = ref.rpartition("/")
        version = client.get_model_version(name, number)
    source = version.source or ""
    model_id = version.model_id or (source.removeprefix("models:/")
                                    if source.startswith("models:/m-") else None)
    if not model_id:
        raise UnverifiedModel(f"{model_uri!r} is not a logged model of MLflow 3 (source "
                              f"{source!r}): register it again")
    return model_id


def check_served_code(model_dir: Path, expected_digest: str | None) -> None:
    """Raise :class:`UnverifiedModel` unless ``model_dir`` loads through MLflow's code loader
    from ``served_model.py`` with exactly the code whose digest the tracking store holds."""
    from mlflow.models import Model

    from .models import CODE_DIR, SERVED_MODEL_FILE, code_digest

    flavors = Model.load(str(model_dir / "MLmodel")).flavors
    pyfunc = flavors.get("python_function", {})
    problems = []
    if set(flavors) != {"python_function"}:
        problems.append(f"flavors are {sorted(flavors)}, expected python_function only")
    if pyfunc.get("loader_module") != CODE_LOADER:
        problems.append(f"loader is {pyfunc.get('loader_module')!r}, expected {CODE_LOADER!r}")
    if Path(str(pyfunc.get("model_code_path", ""))).name != SERVED_MODEL_FILE.name:
        problems.append(f"model code is {pyfunc.get('model_code_path')!r}, expected "
                        f"{SERVED_MODEL_FILE.name!r}")
    if pyfunc.get("code") not in (None, CODE_DIR) or "python_model" in pyfunc:
        problems.append("its MLmodel names extra code or a pickled python_model")
    if not expected_digest:
        problems.append("no code digest was recorded when it was registered")
    elif not problems and code_digest(model_dir) != expected_digest:
        problems.append("its code differs from the code registered with it")
    if problems:
        raise UnverifiedModel("refusing to serve this model: " + "; ".join(problems))


def verified_model_dir(model_uri: str, dst: Path) -> Path:
    """Download ``model_uri`` into ``dst`` and check its code (:func:`check_served_code`)."""
    import mlflow.artifacts
    from mlflow import MlflowClient

    from .models import CODE_DIGEST_TAG

    model_id = _model_id(model_uri)
    expected = MlflowClient().get_logged_model(model_id).tags.get(CODE_DIGEST_TAG)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}",
                                                     dst_path=str(dst)))
    check_served_code(local, expected)
    return local


def build_app() -> RequestGuard:
    """uvicorn's app factory: the verified model in MLflow's scoring app, behind the guard."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    # The checkout's packages serve, as this module is one of them: imported before the model
    # puts its code/ copies first on sys.path, so they are not mixed with those copies.
    import components  # noqa: F401

    # The download goes as soon as the model is loaded: everything is in memory then (the
    # safetensors weights stay mapped after the unlink), and uvicorn ends a SIGTERM by
    # re-raising it, so an atexit clean-up would never run.
    workdir = Path(tempfile.mkdtemp(prefix="vlmforge-serve-"))
    try:
        model = mlflow.pyfunc.load_model(str(verified_model_dir(os.environ[MODEL_URI_ENV], workdir)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RequestGuard(scoring_server.init(model))
