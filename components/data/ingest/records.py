"""What format readers yield, and safe readers for JSON, JSONL and parquet input files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from components.data.ingest.fields import find_surrogate, sample_key
from components.data.ingest.images import ImageRef
from components.data.quarantine import Quarantined, Reject

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

RAW_HEAD = 4096  # bytes of a whole file, or of an over-long line, kept as raw input


@dataclass
class Candidate:
    """One input record mapped to the data contract, images not yet loaded.

    ``positions`` (documents only): the input position of each image. When set, an image
    that fails to load is dropped from the record (its part removed, one row in the image
    ledger) and the record kept; when None, a failing image quarantines the record.
    """

    key: str
    location: str
    record: dict[str, Any]
    images: list[ImageRef] = field(default_factory=list)
    raw: bytes = b""
    positions: list[int] | None = None


def drop_image_parts(record: dict[str, Any], drop: set[int]) -> dict[str, Any]:
    """``record`` without its image parts number ``drop`` (counted over all messages)."""
    seen = -1
    messages = []
    for m in record["messages"]:
        content = m["content"]
        if isinstance(content, list):
            kept = []
            for part in content:
                if part.get("type") == "image":
                    seen += 1
                    if seen in drop:
                        continue
                kept.append(part)
            m = {**m, "content": kept}
        messages.append(m)
    return {**record, "messages": messages}


Item = Candidate | Quarantined
Mapper = Callable[[Any, str], Candidate]


def raw_json(row: Any) -> bytes:
    """The row as JSON bytes for the quarantine (bytes fields summarised)."""
    def default(value: Any) -> Any:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return repr(value)

    return json.dumps(row, default=default).encode("ascii")


def guarded(key: str, location: str, raw: bytes, build: Callable[[], Candidate]) -> Item:
    """``build()``, or a :class:`Quarantined` with the rule it broke; never raises."""
    try:
        return build()
    except Reject as r:
        return Quarantined(key, location, r.rule, r.detail, raw)
    except RecursionError:
        return Quarantined(key, location, "malformed_record", "nesting too deep", raw[:4096])
    except Exception as e:  # noqa: BLE001 (hostile input must not crash the ingest)
        return Quarantined(key, location, "malformed_record", f"{type(e).__name__}: {e}", raw)


def row_key(fmt: str, row: Any, id_fields: tuple[str, ...], default: str) -> str:
    """``{fmt}-{id}`` from the first str/int id field of ``row``, else ``default``."""
    if isinstance(row, dict):
        for name in id_fields:
            value = row.get(name)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return sample_key(fmt, value)
    return default


def map_rows(
    rows: Iterator[tuple[str, Any]],
    fmt: str,
    stem: str,
    mapper: Mapper,
    id_fields: tuple[str, ...] = ("id",),
) -> Iterator[Item]:
    """Map (location, row | Quarantined) pairs; ``mapper(row, key)`` builds one Candidate.

    The key comes from the row's first id field, else ``{fmt}-{stem}-{index}``, so a
    quarantined row is named like the accepted one would have been.
    """
    for i, (location, row) in enumerate(rows):
        if isinstance(row, Quarantined):
            yield row
            continue
        key = row_key(fmt, row, id_fields, sample_key(fmt, f"{stem}-{i:07d}"))
        raw = raw_json(row)
        item = guarded(key, location, raw, lambda row=row, k=key: mapper(row, k))
        if isinstance(item, Candidate):
            item.location = item.location or location
            item.raw = item.raw or raw
        yield item


def load_json(path: Path) -> Any:
    """Parse a JSON file; undecodable bytes become lone surrogates (caught per record)."""
    data = path.read_bytes()
    if not data.strip():
        raise Reject("empty_file", f"{path.name}: {len(data)} bytes")
    try:
        return json.loads(data.decode("utf-8", errors="surrogateescape"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise Reject("unreadable_file", f"{path.name}: {e}") from None


def file_failure(path: Path, reject: Reject) -> Quarantined:
    """A whole input file as one quarantined record."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(RAW_HEAD)
    except OSError:
        raw = b""
    return Quarantined(path.name, str(path), reject.rule, reject.detail, raw)


def jsonl_rows(path: Path, max_line_bytes: int) -> Iterator[tuple[str, Any]]:
    """(``file:line``, row) per non-blank line, streamed; bad lines come as :class:`Quarantined`.

    A line is read at most ``max_line_bytes`` (+ its newline) at a time: a longer one is
    quarantined as ``over_limit`` and skipped without being held in memory."""
    seen = False
    with path.open("rb") as fh:
        lineno = 0
        while line := fh.readline(max_line_bytes + 1):
            lineno += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                seen = True
                yield f"{path}:{lineno}", _long_line(path, lineno, line, fh, max_line_bytes)
                continue
            if not line.strip():
                continue
            seen = True
            yield f"{path}:{lineno}", _json_line(path, lineno, line.rstrip(b"\r\n"))
    if not seen:
        yield str(path), file_failure(path, Reject("empty_file", f"{path.name}: no lines"))


def _long_line(path: Path, lineno: int, head: bytes, fh: IO[bytes], cap: int) -> Quarantined:
    """A line over the cap, its rest skipped chunk by chunk; the first bytes kept as raw."""
    n, chunk = len(head), head
    while not chunk.endswith(b"\n") and (chunk := fh.readline(1 << 20)):
        n += len(chunk)
    return Quarantined(f"{path.name}:{lineno}", f"{path}:{lineno}", "over_limit",
                       f"line of {n} bytes over max_record_bytes={cap}", head[:RAW_HEAD])


def _json_line(path: Path, lineno: int, line: bytes) -> Any:
    location, key = f"{path}:{lineno}", f"{path.name}:{lineno}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return Quarantined(key, location, "invalid_utf8", str(e), line)
    try:
        row = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return Quarantined(key, location, "unreadable_file", f"bad JSON: {e}", line)
    bad = find_surrogate(row)
    if bad:
        return Quarantined(key, location, "invalid_utf8", f"lone surrogate in {bad}", line)
    return row


def parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(``file#row``, row dict) per parquet row, read batch by batch."""
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        yield str(path), file_failure(path, Reject("empty_file", f"{path.name}: 0 bytes"))
        return
    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=256)
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield f"{path}#{i}", row
                i += 1
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for corrupt files)
        yield str(path), file_failure(path, Reject("unreadable_file", f"{type(e).__name__}: {e}"))


def table_rows(path: Path, limits: Limits) -> Iterator[tuple[str, Any]]:
    """Rows of a ``.parquet`` or ``.jsonl`` file."""
    if path.suffix == ".parquet":
        return parquet_rows(path)
    return jsonl_rows(path, limits.max_record_bytes)
