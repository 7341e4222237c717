"""Typed field access for input rows: a missing or mistyped field becomes a :class:`Reject`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from components.data.quarantine import Reject

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]+")
# A shard member is named KEY.000.png; a USTAR name holds 100 bytes (more only split at a "/").
MAX_KEY_BYTES = 80
_KEY_HASH_CHARS = 16


def field(row: Any, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    """``row[name]`` checked against ``kind``; None when ``optional`` and absent/null."""
    if not isinstance(row, Mapping):
        raise Reject("wrong_type", f"record is {type(row).__name__}, expected an object")
    value = row.get(name)
    if value is None:
        if optional:
            return None
        raise Reject("missing_field", f"no {name!r}")
    if isinstance(value, bool) and bool not in _kinds(kind):
        raise Reject("wrong_type", f"{name!r} is bool")
    if not isinstance(value, kind):
        expected = "/".join(k.__name__ for k in _kinds(kind))
        raise Reject("wrong_type", f"{name!r} is {type(value).__name__}, expected {expected}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def text(row: Any, name: str, *, optional: bool = False) -> str | None:
    """A text field as ``str``: bytes are decoded as strict UTF-8, lone surrogates rejected."""
    value = field(row, name, (str, bytes), optional=optional)
    return None if value is None else as_text(value, name)


def as_text(value: Any, name: str) -> str:
    """``value`` (str or UTF-8 bytes) as valid text, else :class:`Reject`."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject("invalid_utf8", f"{name!r}: {e}") from None
    if not isinstance(value, str):
        raise Reject("wrong_type", f"{name!r} is {type(value).__name__}, expected str")
    if _SURROGATE.search(value):
        raise Reject("invalid_utf8", f"{name!r} holds a lone surrogate (undecodable bytes)")
    return value


def find_surrogate(value: Any, path: str = "record") -> str | None:
    """Path of the first string (or key) in a JSON-like value with a lone surrogate."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and _SURROGATE.search(k):
                return f"{path} key"
            hit = find_surrogate(v, f"{path}.{k}")
            if hit:
                return hit
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            hit = find_surrogate(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


def sample_key(fmt: str, ident: Any) -> str:
    """A webdataset-safe key: ``{fmt}-{ident}`` with anything but ``[A-Za-z0-9_-]`` as ``_``,
    bounded by :func:`bounded_key`."""
    return bounded_key(_UNSAFE_KEY.sub("_", f"{fmt}-{ident}"))


def bounded_key(key: str) -> str:
    """``key`` when it fits :data:`MAX_KEY_BYTES` (UTF-8), else its head and a stable hash of
    the whole key: ``{head}-{sha1[:16]}``, so a long id names its record instead of aborting
    the shard write, and two long ids sharing a head stay distinct."""
    data = key.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha1(data).hexdigest()[:_KEY_HASH_CHARS]
    head = data[: MAX_KEY_BYTES - _KEY_HASH_CHARS - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"
