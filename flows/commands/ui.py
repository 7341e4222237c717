"""`vlmforge ui`: the MLflow UI and the Prefect server over the embedded stores, on 127.0.0.1.

Each server runs in its own process group (MLflow starts uvicorn and job workers below
it), so Ctrl-C here stops every process either one started. Only the standard library
is imported at module level; `vlmforge schedule` reuses the Prefect helpers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT_S = 300.0  # Prefect migrates its database on first start: slow on a busy CPU
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(urls: list[str], procs: list[subprocess.Popen],
                     timeout: float = READY_TIMEOUT_S) -> bool:
    """Poll until every URL answers 200; False when one process exits or time runs out."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        pending = [u for u in pending if not answers(u)]
        if pending:
            time.sleep(0.5)
    return not pending


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def prefect_server_env(port: int, base: Mapping[str, str] | None = None, ui: bool = True) -> dict[str, str]:
    """Environment of a Prefect server on 127.0.0.1:``port`` (PREFECT_HOME from ``base``)."""
    env = dict(os.environ if base is None else base)
    env.pop("PREFECT_API_URL", None)  # the server is the API, not a client of another one
    env.update(PREFECT_SERVER_API_HOST=HOST, PREFECT_SERVER_API_PORT=str(port),
               PREFECT_UI_ENABLED="true" if ui else "false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true")
    return env


def start_prefect_server(port: int, env: Mapping[str, str] | None = None,
                         ui: bool = True) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:``port`` in a process group of its own."""
    return subprocess.Popen([_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)],
                            env=prefect_server_env(port, env, ui), start_new_session=True)


def start_mlflow_ui(port: int, tracking_uri: str, artifact_root: Path,
                    env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`mlflow ui` over ``tracking_uri`` on 127.0.0.1:``port`` in a process group of its own."""
    return subprocess.Popen([_bin("mlflow"), "ui", "--backend-store-uri", tracking_uri,
                             "--default-artifact-root", str(artifact_root),
                             "--host", HOST, "--port", str(port), "--workers", "1"],
                            env=dict(os.environ if env is None else env), start_new_session=True)


def stop(procs: list[subprocess.Popen], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to each process group (uvicorn and huey shut down cleanly on it), then
    SIGKILL to what is left after ``timeout``."""
    def signal_group(p: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)  # each was started as the leader of its own session

    for p in procs:
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:  # grandchildren may outlive a leader that exited
        signal_group(p, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


@contextlib.contextmanager
def prefect_api(port: int, home_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The Prefect API to use: $PREFECT_API_URL, a server already answering on 127.0.0.1:``port``
    (e.g. `vlmforge ui`), or a server started here (stopped on exit). Exports PREFECT_API_URL."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    url = f"http://{HOST}:{port}/api"
    proc = None
    if not answers(f"{url}/health"):
        print(f"starting a Prefect server on {HOST}:{port} (PREFECT_API_URL is unset)", flush=True)
        proc = start_prefect_server(port, home_env)
        if not wait_until_ready([f"{url}/health"], [proc]):
            stop([proc])
            raise RuntimeError(f"the Prefect server on port {port} did not start")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if proc is not None:
            stop([proc])


def serve_dashboards(mlflow_port: int, prefect_port: int) -> int:
    """Start both UIs, print their URLs, and stop both on Ctrl-C (or SIGTERM)."""
    from flows.environment import configure_environment

    home = configure_environment()
    import registry

    cfg = registry.configure(home)  # creates the SQLite schema on a fresh home
    procs: list[subprocess.Popen] = []
    lines: list[str] = []
    urls: list[str] = []

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C stops both even where SIGINT came in ignored (a background job of a shell)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if cfg.tracking_uri.startswith(("http://", "https://")):
            lines.append(f"MLflow:  {cfg.tracking_uri}  (server from MLFLOW_TRACKING_URI)")
        else:
            procs.append(start_mlflow_ui(mlflow_port, cfg.tracking_uri, cfg.artifact_root))
            urls.append(f"http://{HOST}:{mlflow_port}")
            lines.append(f"MLflow:  {urls[-1]}  (pid {procs[-1].pid})")
        if os.environ.get("PREFECT_API_URL"):
            lines.append(f"Prefect: {os.environ['PREFECT_API_URL']}  (server from PREFECT_API_URL)")
        else:
            procs.append(start_prefect_server(prefect_port))
            urls.append(f"http://{HOST}:{prefect_port}")
            lines.append(f"Prefect: {urls[-1]}  (pid {procs[-1].pid})")
        print("\n".join(lines) + "\nCtrl-C stops both.", flush=True)
        if not procs:
            return 0
        if wait_until_ready(urls, procs):
            print("ready: open the URLs above", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args[0] for p in procs if p.poll() is not None]
        print(f"stopped: {', '.join(Path(d).name for d in dead)} exited", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        stop(procs)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def cmd_ui(args) -> int:
    return serve_dashboards(args.mlflow_port, args.prefect_port)


def add_ui_parser(subparsers) -> None:
    ui = subparsers.add_parser("ui", help="MLflow UI and Prefect server on 127.0.0.1")
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.set_defaults(func=cmd_ui)
