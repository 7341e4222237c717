"""`vlmforge bench serve`: a registered model behind `vlmforge serve`, under load.

Sends ``requests`` single-row requests from ``concurrency`` threads (urllib) to a
server started on a free 127.0.0.1 port, after answering the same row in this process
``baseline_requests`` times. ratio = served throughput / in-process throughput: how much
of the model's own speed survives HTTP, JSON and the scoring server.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _ensure_configured() -> None:
    import registry

    try:
        registry.current_config()
    except RuntimeError:
        from flows.environment import configure_environment

        registry.configure(configure_environment())


def _row(max_new_tokens: int | None) -> dict:
    from registry.pyfunc_model import EXAMPLE_QUESTION, example_image_base64

    row = {"image": example_image_base64(64), "question": EXAMPLE_QUESTION}
    if max_new_tokens is not None:
        row["max_new_tokens"] = max_new_tokens
    return row


def _in_process_rps(model_uri: str, row: dict, n: int) -> float:
    """Sequential single-row predictions per second with the model loaded here."""
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    frame = pd.DataFrame([row])
    model.predict(frame)  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        model.predict(frame)
    return n / (time.perf_counter() - start)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_serve(model_uri: str, requests: int = 500, concurrency: int = 8, *,
                max_new_tokens: int | None = None, baseline_requests: int = 50,
                ready_timeout_s: float = 300.0) -> dict:
    """Latency percentiles, throughput and errors of the served model (see module doc)."""
    from flows.commands.serve import free_port, start_server, stop_server, wait_until_ready

    _ensure_configured()
    row = _row(max_new_tokens)
    in_process = _in_process_rps(model_uri, row, min(baseline_requests, requests))

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    body = json.dumps({"dataframe_records": [row]}).encode()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                answer = json.loads(r.read())["predictions"][0]["answer"]
                ok = r.status == 200 and isinstance(answer, str)
                problem = None if ok else f"status {r.status}"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            problem = f"{type(e).__name__}: {e}"
        elapsed = time.perf_counter() - start
        with lock:
            if problem is None:
                latencies.append(elapsed)
            else:
                errors.append(problem)

    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = start_server(model_uri, port, stdout=out, stderr=subprocess.STDOUT)
        try:
            startup = wait_until_ready(proc, port, timeout_s=ready_timeout_s)
            for i in range(min(3, requests)):  # warm-up, not counted
                one(i)
            latencies.clear()
            errors.clear()
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(requests)))
            wall = time.perf_counter() - start
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}\n{log.read_text()[-3000:]}") from None
        finally:
            stop_server(proc)

    served = len(latencies) / wall
    ms = [t * 1000 for t in latencies] or [float("nan")]
    return {
        "model": model_uri, "requests": requests, "concurrency": concurrency,
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "startup_seconds": round(startup, 1),
        "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(_percentile(ms, 0.95), 1),
        "throughput_rps": round(served, 2), "in_process_rps": round(in_process, 2),
        "ratio": round(served / in_process, 3),
    }
