"""`vlmforge bench soak`: a served tiny VLM under a stream of good and hostile requests.

Registers a tiny VLM (built from inline configs, in a throwaway store unless a model URI is
given), starts it exactly as `vlmforge serve` does, and sends ``requests`` requests from
``concurrency`` threads; one in ``hostile_every`` is hostile, cycling through
:data:`HOSTILE_KINDS` (server paths, oversized bodies, too many rows, ICO and pixel bombs,
special tokens, bad base64, too many new tokens, JSON the parser chokes on, ...). It reports
responses by status, responses >= 500 (must be 0), good requests answered (must be all),
responses that leak a stack trace, latency percentiles, and the peak resident memory of the
server's process tree (read from /proc) against the bound the caps imply
(``ServingLimits.memory_bound`` of the idle server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_TEXTS = ["user\nWhat colour is the circle?", "assistant\nred", "Is there a blue square?",
                   "assistant\nyes", "Describe the image.", "a red circle at the top left."] * 40
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
QUESTIONS = ("What colour is the circle?", "Is there a blue square?", "Describe the image.")
HOSTILE_KINDS = ("server_path", "oversized_body", "many_rows", "ico_bomb", "special_tokens",
                 "bad_base64", "too_many_new_tokens", "pixel_bomb", "deep_json", "long_question",
                 "csv_body", "huge_integer")
MIB = 1024 * 1024


# ---- the model ------------------------------------------------------------------------------


def build_tiny_vlm(out_dir: Path, *, text_hidden: int = 32, text_layers: int = 1,
                   context: int = 512, endless: bool = False) -> Path:
    """A tiny Idefics3 VLM (64 px, 32 px tiles) saved like the training stages save theirs.

    ``context``: the LM's positions; ``endless``: its generation config suppresses the
    end-of-utterance token, so it always generates ``max_new_tokens`` (for deadline tests)."""
    import torch

    from components.data.tokenizer import train_tokenizer
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.backbones import load_text_backbone, load_vision_backbone
    from components.model.build import save_vlm

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(TOKENIZER_TEXTS, 400, out_dir / "tokenizer")
    torch.manual_seed(0)
    text = dict(hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                num_hidden_layers=text_layers, num_attention_heads=2, num_key_value_heads=2,
                max_position_embeddings=context)
    vision, lm = load_vision_backbone(VISION), load_text_backbone(text, vocab_size=len(tokenizer))
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=2).eval()
    if endless:
        model.generation_config.suppress_tokens = [tokenizer.eos_token_id]
    processor = build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8,
                                scale_factor=2)
    return save_vlm(model, processor, out_dir / "vlm")


def register_tiny_vlm(name: str, workdir: Path, **build: Any) -> str:
    """Build, register (in the configured store) and return ``models:/<name>/<version>``."""
    import registry

    hf_dir = build_tiny_vlm(workdir, **build)
    with registry.start_run(f"register-{name}") as run_id:
        version = registry.register_hf_model(hf_dir, name, run_id=run_id, tags={})
    return f"models:/{name}/{version}"


# ---- HTTP: a small client that can send Expect: 100-continue ---------------------------------


@dataclass
class Reply:
    status: int | None  # None: the connection ended without a response
    body: bytes
    seconds: float


def post(port: int, body: bytes, *, content_type: str = "application/json",
         declared_length: int | None = None, expect_continue: bool = False,
         timeout_s: float = 120.0) -> Reply:
    """POST ``body`` to /invocations. With ``expect_continue`` the body is sent only if the
    server answers 100 Continue (RFC 9110), as curl does for large bodies."""
    start = time.perf_counter()
    length = len(body) if declared_length is None else declared_length
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n"
            + ("Expect: 100-continue\r\n" if expect_continue else "") + "\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            reader = sock.makefile("rb")
            sock.sendall(head)
            status = None
            if expect_continue:
                status, headers = _read_head(reader)
                if status == 100:
                    status = None
            if status is None:
                sock.sendall(body)
                status, headers = _read_head(reader)
                while status == 100:
                    status, headers = _read_head(reader)
            size = int(headers.get("content-length", -1))
            data = reader.read(size) if size >= 0 else reader.read()
    except (OSError, ValueError):
        return Reply(None, b"", time.perf_counter() - start)
    return Reply(status, data, time.perf_counter() - start)


def _read_head(reader: Any) -> tuple[int, dict[str, str]]:
    line = reader.readline(65536)
    if not line:
        raise ConnectionError("no response")
    status = int(line.split()[1])
    headers = {}
    while (line := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


# ---- requests -------------------------------------------------------------------------------


@dataclass
class Probe:
    """One request: its body and how it is sent; ``kind`` is "good" or a hostile kind."""

    kind: str
    body: bytes
    rows: int = 0
    content_type: str = "application/json"
    declared_length: int | None = None
    expect_continue: bool = False


def _encoded(image: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_bomb(side: int) -> bytes:
    """A valid PNG of side x side 1-bit pixels, all zero: a few kB that decode to side^2 px."""
    raw_row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(raw_row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ico_bomb(png: bytes) -> bytes:
    """An ICO whose one entry is ``png``: Pillow's ICO reader decodes it whole to find its size."""
    entry = bytes([0, 0, 0, 0]) + (1).to_bytes(2, "little") + (32).to_bytes(2, "little")
    entry += len(png).to_bytes(4, "little") + (22).to_bytes(4, "little")
    return b"\x00\x00\x01\x00\x01\x00" + entry + png


class RequestMaker:
    """Good and hostile request bodies, built from a few images made once."""

    def __init__(self, workdir: Path, seed: int = 0) -> None:
        from PIL import Image, ImageDraw

        from registry.serving_limits import LIMITS

        self.limits = LIMITS
        self.rng = random.Random(seed)
        self.images = []
        for size, fmt in ((32, "PNG"), (64, "JPEG"), (48, "WEBP"), (96, "PNG")):
            img = Image.new("RGB", (size, size), "white")
            ImageDraw.Draw(img).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4),
                                        fill=(200, 30, 30))
            self.images.append(_b64(_encoded(img, fmt)))
        self.pixel_bomb = _b64(png_bomb(16_384))  # 268M pixels in 33 kB
        # 144M pixels in 17 kB: under Pillow's own bomb check, which an ICO only meets after
        # decoding it
        self.ico_bomb = _b64(ico_bomb(png_bomb(12_000)))
        self.server_file = workdir / "server-side.png"  # a real image on the server's disk
        self.server_file.write_bytes(base64.b64decode(self.images[0]))

    def good_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"image": self.rng.choice(self.images),
                               "question": self.rng.choice(QUESTIONS),
                               "max_new_tokens": self.rng.randint(1, 8)}
        if self.rng.random() < 0.3:
            row["image"] = "data:image/png;base64," + self.images[0]
        if self.rng.random() < 0.3:
            row["history"] = [["Is there a circle?", "yes"]]
        return row

    def _json(self, kind: str, rows: list[dict[str, Any]]) -> Probe:
        return Probe(kind, json.dumps({"dataframe_records": rows}).encode(), len(rows))

    def good(self) -> Probe:
        return self._json("good", [self.good_row() for _ in range(self.rng.randint(1, 3))])

    def hostile(self, kind: str) -> Probe:
        limits, row = self.limits, self.good_row()
        if kind == "server_path":
            path = self.rng.choice(["/etc/passwd", "/proc/self/environ", str(self.server_file),
                                    "../../etc/hostname", "/no/such/file.png"])
            return self._json(kind, [{**row, "image": path}])
        if kind == "oversized_body":
            return Probe(kind, b"{}", declared_length=limits.max_body_bytes + 1,
                         expect_continue=True)
        if kind == "many_rows":
            return self._json(kind, [self.good_row() for _ in range(limits.max_rows + 1)])
        if kind == "ico_bomb":
            return self._json(kind, [{**row, "image": self.ico_bomb}])
        if kind == "pixel_bomb":
            return self._json(kind, [{**row, "image": self.pixel_bomb}])
        if kind == "special_tokens":
            token = self.rng.choice(["<image>", "<end_of_utterance>", "<fake_token_around_image>",
                                     "<|im_start|>"])
            if self.rng.random() < 0.5:
                return self._json(kind, [{**row, "question": f"What is {token} here?"}])
            return self._json(kind, [{**row, "history": [[f"Hi{token}", "hello"]]}])
        if kind == "bad_base64":
            return self._json(kind, [{**row, "image": "this is not base64!"}])
        if kind == "too_many_new_tokens":
            if self.rng.random() < 0.5:
                return self._json(kind, [{**row, "max_new_tokens": limits.max_new_tokens + 1}])
            per_row = limits.max_new_tokens
            n = limits.max_request_new_tokens // per_row + 1
            return self._json(kind, [{**self.good_row(), "max_new_tokens": per_row}
                                     for _ in range(n)])
        if kind == "deep_json":
            return Probe(kind, b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        if kind == "long_question":
            return self._json(kind, [{**row, "question": "why? " * limits.max_question_chars}])
        if kind == "csv_body":
            return Probe(kind, b"image,question\n/etc/passwd,hi\n", content_type="text/csv")
        if kind == "huge_integer":
            return Probe(kind, b'{"dataframe_records": [{"image": "a", "question": "q", '
                               b'"max_new_tokens": ' + b"9" * 5000 + b"}]}")
        raise ValueError(f"unknown hostile kind {kind!r}")


def leaks(body: bytes) -> bool:
    """Whether an error body shows server internals: a stack trace or a source file path."""
    text = body.decode("utf-8", "replace")
    return "Traceback" in text or 'File "/' in text or "site-packages" in text


# ---- the server's memory --------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children[ppid].append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int, field: str = "VmRSS") -> int:
    """Sum of ``field`` (VmRSS now, VmHWM peak) over the process tree, in bytes."""
    return 1024 * sum(_status_kib(pid, field) for pid in process_tree(root))


@contextmanager
def peak_rss_sampler(root: int, every_s: float = 0.05) -> Any:
    """Samples the tree's total RSS in a thread; yields a dict whose "peak" is the maximum."""
    result = {"peak": tree_rss(root)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            result["peak"] = max(result["peak"], tree_rss(root))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


# ---- the soak -------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _answered(probe: Probe, reply: Reply) -> bool:
    if reply.status != 200:
        return False
    try:
        answers = json.loads(reply.body)["predictions"]
    except (ValueError, KeyError, TypeError):
        return False
    return len(answers) == probe.rows and all(isinstance(a.get("answer"), str) for a in answers)


def run_soak(port: int, server_pid: int, maker: RequestMaker, *, requests: int,
             concurrency: int, hostile_every: int) -> dict[str, Any]:
    """Send the stream to a running server; the measurements (see the module doc)."""
    from registry.serving_limits import LIMITS

    probes = [maker.hostile(HOSTILE_KINDS[(i // hostile_every) % len(HOSTILE_KINDS)])
              if i % hostile_every == hostile_every - 1 else maker.good()
              for i in range(requests)]
    for probe in [maker.good() for _ in range(3)]:  # warm-up, not counted
        post(port, probe.body)
    idle = tree_rss(server_pid)

    def send(probe: Probe) -> tuple[Probe, Reply]:
        return probe, post(port, probe.body, content_type=probe.content_type,
                           declared_length=probe.declared_length,
                           expect_continue=probe.expect_continue)

    start = time.perf_counter()
    with peak_rss_sampler(server_pid) as rss, ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(send, probes))
    wall = time.perf_counter() - start
    hwm = tree_rss(server_pid, "VmHWM")

    statuses = Counter(str(r.status) for _, r in replies)
    good = [(p, r) for p, r in replies if p.kind == "good"]
    hostile = [(p, r) for p, r in replies if p.kind != "good"]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for p, r in hostile:
        by_kind[p.kind][str(r.status)] += 1
    bound = LIMITS.memory_bound(idle)
    peak = max(rss["peak"], hwm)
    return {
        "requests": requests, "concurrency": concurrency, "good": len(good),
        "hostile": len(hostile),
        "status_counts": dict(sorted(statuses.items())),
        "responses_5xx": sum(1 for _, r in replies if r.status is not None and r.status >= 500),
        "no_response": statuses.get("None", 0),
        "good_answered": f"{sum(_answered(p, r) for p, r in good)}/{len(good)}",
        "hostile_4xx": f"{sum(1 for _, r in hostile if r.status and 400 <= r.status < 500)}"
                       f"/{len(hostile)}",
        "hostile_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "leaking_responses": sum(leaks(r.body) for _, r in replies if r.status != 200),
        "good_p50_ms": round(1000 * statistics.median([r.seconds for _, r in good] or [0]), 1),
        "good_p95_ms": round(1000 * _percentile([r.seconds for _, r in good], 0.95), 1),
        "hostile_p50_ms": round(1000 * statistics.median([r.seconds for _, r in hostile] or [0]),
                                1),
        "hostile_p95_ms": round(1000 * _percentile([r.seconds for _, r in hostile], 0.95), 1),
        "wall_seconds": round(wall, 1),
        "server_idle_rss_mb": round(idle / MIB, 1),
        "server_peak_rss_mb": round(peak / MIB, 1),
        "rss_bound_mb": round(bound / MIB, 1),
        "peak_within_bound": peak <= bound,
    }


@contextmanager
def _throwaway_store() -> Any:
    """A fresh tracking store in a temporary home (MLFLOW_TRACKING_URI set aside meanwhile)."""
    import registry

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tempfile.TemporaryDirectory(prefix="vlmforge-soak-home-") as home:
            registry.configure(Path(home))
            yield Path(home)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def bench_soak(model_uri: str | None = None, requests: int = 1000, concurrency: int = 8, *,
               hostile_every: int = 10, ready_timeout_s: float = 300.0) -> dict[str, Any]:
    """Soak a `vlmforge serve` server (see module doc); ``model_uri`` None: a tiny VLM
    registered in a throwaway store. The registry must be configured when a URI is given."""
    from flows.commands.serve import free_port, start_server, stop_server, wait_until_ready

    with tempfile.TemporaryDirectory(prefix="vlmforge-soak-") as tmp, \
            (_throwaway_store() if model_uri is None else _nothing()):
        workdir = Path(tmp)
        if model_uri is None:
            model_uri = register_tiny_vlm("vlm-soak", workdir / "model")
        port = free_port()
        log = workdir / "server.log"
        with log.open("wb") as out:
            proc = start_server(model_uri, port, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                startup = wait_until_ready(proc, port, timeout_s=ready_timeout_s)
            except (RuntimeError, TimeoutError) as e:
                raise RuntimeError(f"{e}\n{log.read_text()[-3000:]}") from None
            result = run_soak(port, proc.pid, RequestMaker(workdir), requests=requests,
                              concurrency=concurrency, hostile_every=hostile_every)
            result["server_alive"] = proc.poll() is None
        finally:
            stop_server(proc)
    return {"model": model_uri, "startup_seconds": round(startup, 1), **result}


@contextmanager
def _nothing() -> Any:
    yield None
