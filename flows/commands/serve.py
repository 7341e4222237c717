"""`vlmforge serve`: a registered model behind MLflow's scoring server, on 127.0.0.1 by default.

The server is MLflow's own scoring app (what `mlflow models serve` runs) under uvicorn in
this Python environment, behind the request guard of :mod:`registry.serving_app` (content
type, body cap before the body is read, per-request deadline), against the project's
tracking store; it serves a version only if its code is the code registered with it, and
never unpickles. POST rows of ``image`` (base64 / data URL) + ``question`` to
``/invocations``. Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flows.environment import PROJECT_ROOT
from registry.serving_limits import LIMITS

DEFAULT_PORT = 5001
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT_S = LIMITS.request_timeout_s
READY_TIMEOUT_S = 300.0
APP_FACTORY = "registry.serving_app:build_app"


def serve_command(port: int, host: str = DEFAULT_HOST) -> list[str]:
    """The uvicorn command line of the guarded scoring app (the model comes by environment)."""
    return [sys.executable, "-m", "uvicorn", "--factory", APP_FACTORY, "--host", host,
            "--port", str(port), "--limit-concurrency", str(LIMITS.max_concurrent_requests),
            "--timeout-keep-alive", "5", "--no-server-header"]


def server_env(model_uri: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """This environment plus the configured tracking/registry URIs (``registry.configure`` first),
    the model to serve and its request timeout; pickled models are refused outright.

    The project root goes on PYTHONPATH (the app is ``registry.serving_app``).
    """
    import registry
    from registry.serving_app import MODEL_URI_ENV, TIMEOUT_ENV

    cfg = registry.current_config()
    env = dict(os.environ, MLFLOW_TRACKING_URI=cfg.tracking_uri,
               MLFLOW_REGISTRY_URI=cfg.registry_uri)
    env[MODEL_URI_ENV] = model_uri
    env[TIMEOUT_ENV] = str(timeout_s)
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH"))
                                  if p)
    return env


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(model_uri: str, port: int, host: str = DEFAULT_HOST,
                 timeout_s: int = DEFAULT_TIMEOUT_S, **popen_kwargs: Any) -> subprocess.Popen:
    """Start the server in its own process group (so :func:`stop_server` stops all of it)."""
    return subprocess.Popen(serve_command(port, host), env=server_env(model_uri, timeout_s),
                            start_new_session=True, **popen_kwargs)


def wait_until_ready(proc: subprocess.Popen, port: int, host: str = DEFAULT_HOST,
                     timeout_s: float = READY_TIMEOUT_S) -> float:
    """Poll ``/ping`` until it answers 200; returns the seconds waited.

    Raises RuntimeError if the server exits first, TimeoutError after ``timeout_s``.
    """
    start = time.monotonic()
    url = f"http://{host}:{port}/ping"
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with code {proc.returncode} before ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"model server not ready on {url} after {timeout_s:.0f}s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _check_alias(model_uri: str) -> None:
    """Fail early, with a clear message, on `models:/<name>@<alias>` with no such alias."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return
    import registry

    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    if registry.get_alias(name, alias) is None:
        raise SystemExit(f"no version of model {name!r} holds alias {alias!r}")


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.environment import configure_stores

    configure_stores()
    _check_alias(args.model)
    proc = start_server(args.model, args.port, args.host, args.timeout)
    print(f"Serving {args.model} at http://{args.host}:{args.port}/invocations "
          "(Ctrl-C stops it)", flush=True)
    # The server runs in its own process group: a SIGTERM to this process must stop it too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_server(proc)
        return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `serve --model URI [--port 5001] [--host 127.0.0.1]` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "serve", help="serve a registered model over HTTP (mlflow models serve)",
        description="Answer POST /invocations (application/json) with rows of image (base64 "
                    "or a data:image/...;base64, URL; PNG, JPEG or WEBP) + question [+ history, "
                    "max_new_tokens], within the caps of registry/serving_limits.py.")
    p.add_argument("--model", required=True,
                   help="models:/<name>@<alias> or models:/<name>/<version>, "
                        "e.g. models:/vlm-tiny@champion")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S,
                   help="seconds a request may take: then 504, and its generation stops")
    p.set_defaults(func=cmd_serve)
    return p
