"""The HTTP client of the OpenAI-compatible judge (stdlib ``urllib`` only), hardened:

* https only, except on a loopback host (``127.0.0.1``, ``::1``, ``localhost``);
* redirects are never followed: a 3xx is an error naming its ``Location`` (so the API key
  never reaches another address);
* the API key comes only from an environment variable named ``VLMFORGE_JUDGE_*``: a suite
  file cannot make the judge send another secret (``AWS_SECRET_ACCESS_KEY``, ...) anywhere;
* a reply larger than ``max_response_bytes`` is refused;
* 429, 5xx and connection errors are retried with exponential backoff (``max_attempts`` in
  all; a small ``Retry-After`` is honoured, a large one ends the retries);
* every wait (connect, read, backoff) ends at the judge run's deadline: ``JudgeDeadline``.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

__all__ = [
    "KEY_ENV_PREFIX",
    "LOOPBACK_HOSTS",
    "HttpPolicy",
    "JudgeDeadline",
    "JudgeError",
    "check_base_url",
    "check_key_env",
    "post_json",
]

KEY_ENV_PREFIX = "VLMFORGE_JUDGE_"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_KEY_ENV = re.compile(rf"^{KEY_ENV_PREFIX}[A-Z0-9_]+$")
_CHUNK = 64 * 1024


class JudgeError(RuntimeError):
    """A judge backend failed to answer (endpoint unreachable, HTTP error, malformed reply)."""


class JudgeDeadline(JudgeError):
    """The judge run's deadline passed before a reply came. ``done``: what a batch of
    concurrent requests did get (None where the deadline came first), when set."""

    done: list | None = None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """``url`` without a trailing ``/`` when it is an https URL, or http on a loopback host;
    ValueError otherwise (also for credentials, a query or a fragment in it)."""
    if not isinstance(url, str) or not url:
        raise ValueError("judge base_url must be an http(s) URL, got an empty value")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"judge base_url must be an http(s) URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"judge base_url {url!r}: credentials in the URL are refused; name an "
                         f"api_key_env ({KEY_ENV_PREFIX}*) instead")
    if parts.query or parts.fragment:
        raise ValueError(f"judge base_url {url!r}: must not carry a query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"judge base_url {url!r}: plain http is allowed only on a loopback host "
                         f"({', '.join(LOOPBACK_HOSTS)}); use https")
    return url.rstrip("/")


def check_key_env(name: str | None) -> str | None:
    """``name`` when it is None or ``VLMFORGE_JUDGE_<UPPER_CASE>``; ValueError otherwise."""
    if name is None or _KEY_ENV.match(name):
        return name
    raise ValueError(f"judge api_key_env {name!r} refused: the judge reads its API key only from "
                     f"an environment variable named {KEY_ENV_PREFIX}<NAME> (upper case letters, "
                     "digits, _), so a suite file cannot send another secret to an endpoint; "
                     f"copy the key into e.g. {KEY_ENV_PREFIX}API_KEY")


@dataclass(frozen=True)
class HttpPolicy:
    """Limits of one request and its retries."""

    timeout_s: float = 60.0  # one attempt's connect / read wait
    max_attempts: int = 4  # attempts in all (1: no retry)
    backoff_s: float = 0.5  # wait before the 2nd attempt; doubled each time
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After ends the retries
    max_response_bytes: int = 1 << 20

    def __post_init__(self):
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("timeout_s must be positive, backoff_s and max_backoff_s >= 0")
        if self.max_attempts < 1 or self.max_response_bytes < 1:
            raise ValueError("max_attempts and max_response_bytes must be at least 1")


class _Retryable(JudgeError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()
        raise JudgeError(f"judge endpoint {req.full_url}: HTTP {code} redirect to {newurl} "
                         "refused (a judge never follows redirects, so its API key is not sent "
                         "elsewhere); set base_url to the final address")


_OPENER = urllib.request.build_opener(_RefuseRedirect)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _read_capped(response, url: str, cap: int, deadline: float | None) -> bytes:
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cap:
        raise JudgeError(f"judge endpoint {url}: reply of {int(length)} bytes is over the "
                         f"{cap}-byte limit")
    chunks, total = [], 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            raise JudgeDeadline(f"judge endpoint {url}: the judge run's deadline passed while "
                                "reading a reply")
        chunk = response.read(min(_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise JudgeError(f"judge endpoint {url}: reply is over the {cap}-byte limit")


def _post_once(url: str, body: bytes, headers: Mapping[str, str],
               secret_headers: Mapping[str, str], timeout: float, cap: int,
               deadline: float | None) -> bytes:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    for name, value in secret_headers.items():
        request.add_unredirected_header(name, value)  # never copied onto a redirect
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _read_capped(response, url, cap, deadline)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace").strip() if exc.fp else ""
        location = exc.headers.get("Location") if exc.headers else None
        message = (f"judge endpoint {url}: HTTP {exc.code} {exc.reason}"
                   + (f" (Location: {location}; redirects are not followed)" if location else "")
                   + (f": {detail}" if detail else ""))
        if exc.code == 429 or 500 <= exc.code < 600:
            raise _Retryable(message, _retry_after(exc.headers.get("Retry-After")
                                                   if exc.headers else None)) from exc
        raise JudgeError(message) from exc
    except JudgeError:
        raise
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"judge endpoint {url}: request failed ({reason})") from exc


def post_json(url: str, body: bytes, headers: Mapping[str, str], *, policy: HttpPolicy,
              deadline: float | None = None, secret_headers: Mapping[str, str] | None = None,
              sleep: Callable[[float], None] = time.sleep) -> bytes:
    """POST ``body`` to ``url`` under ``policy``; the reply's bytes. ``deadline`` is a
    ``time.monotonic()`` instant no wait goes past (``JudgeDeadline``); ``secret_headers``
    (the API key) are sent only to ``url`` itself."""
    for attempt in range(1, policy.max_attempts + 1):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise JudgeDeadline(f"judge endpoint {url}: the judge run's deadline passed")
        timeout = policy.timeout_s if left is None else min(policy.timeout_s, left)
        try:
            return _post_once(url, body, headers, secret_headers or {}, timeout,
                              policy.max_response_bytes, deadline)
        except _Retryable as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise JudgeDeadline(f"{exc}; the judge run's deadline passed") from exc
            if attempt == policy.max_attempts:
                raise JudgeError(f"{exc} (after {attempt} attempt{'s' * (attempt > 1)})") from exc
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after_s:
                raise JudgeError(f"{exc}; the endpoint asks to retry after {exc.retry_after:.0f}s, "
                                 f"longer than the {policy.max_retry_after_s:.0f}s a judge "
                                 "waits") from exc
            wait = (exc.retry_after if exc.retry_after is not None
                    else min(policy.backoff_s * 2 ** (attempt - 1), policy.max_backoff_s))
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise JudgeDeadline(f"{exc}; the judge run's deadline passes before the next "
                                    "attempt") from exc
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
