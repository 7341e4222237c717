"""The quarantine: records that failed a rule, kept with the rule, the reason and the raw input.

A quarantine shard is a webdataset tar: per record ``__key__`` (``q-0000000``...), ``json``
(format, key, location, rule, detail; ASCII-escaped so that broken text survives) and, when
there is one, ``raw`` (the offending input bytes, capped). The same entries, without ``raw``,
go to ``quarantine.jsonl`` for people and for Great Expectations.

The tar primitives the quarantine, the ingest's shards and the tar readers share live here
too (the ingest package imports this module, never the other way): :class:`TarAppender`
writes whole samples or nothing, and :func:`tar_members` reads a tar one member at a time and
verifies its end, raising :class:`TarDamage` with the byte offset where it stops being whole.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

RULES: dict[str, str] = {
    "empty_file": "the input file is empty",
    "unreadable_file": "the input (file, JSONL line, tar entry) does not parse",
    "truncated_tar": "a tar stops being whole (cut, a damaged header, no end-of-archive blocks): "
                     "the sample being read when reading stopped, with the byte offset",
    "unsafe_path": "a path with '..', an absolute path, a link or a special tar member",
    "unsafe_member": "a tar member that is never read: sparse (its size is not its stored size)",
    "over_limit": "a record over a cap of ingest.limits.Limits (members, member bytes, images, "
                  "record bytes)",
    "skipped_file": "a file of the source folder that looks like input but cannot be read as "
                    "it is (compressed, its suffix in another case)",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type",
    "invalid_utf8": "text is not valid UTF-8",
    "image_missing": "a referenced image file does not exist",
    "image_decode": "image bytes do not decode",
    "decompression_bomb": "image pixels exceed Pillow's MAX_IMAGE_PIXELS",
    "image_size": "image width or height out of range",
    "placeholder_mismatch": "number of image placeholders != number of images",
    "image_count": "fewer images than the task family needs, or images on a text task",
    "empty_answer": "an assistant turn, answer or preference reply is empty",
    "text_length": "total text length out of bounds",
    "duplicate_key": "a key seen before in this ingest",
    "unknown_task": "task not in the task registry",
    "malformed_record": "the record broke the mapping, or its reader, in an unforeseen way",
    "unwritable_record": "the record's shard entry could not be written (the shard is unchanged)",
}
RAW_LIMIT = 1 << 20  # bytes of offending input kept per quarantined record


class Reject(Exception):
    """A record breaks ``rule`` (a key of :data:`RULES`)."""

    def __init__(self, rule: str, detail: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown quarantine rule {rule!r}; expected one of {list(RULES)}")
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class Quarantined:
    """One rejected input record and where it came from."""

    key: str
    location: str
    rule: str
    detail: str
    raw: bytes = b""


class QuarantineRateError(Exception):
    """More records were quarantined than the threshold allows."""


@dataclass(frozen=True)
class QuarantineEntry:
    """The JSON part of a quarantine shard entry."""

    format: str
    key: str
    location: str
    rule: str
    detail: str
    raw_bytes: int


BLOCK = tarfile.BLOCKSIZE  # 512: headers and data are whole blocks
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)  # POSIX: an archive ends with two zero blocks
# pax / GNU long-name headers that tarfile reads whole into memory before the member they name
EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                  tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
MAX_EXTENDED_HEADER = 1 << 20  # bytes; real ones hold a path and a few attributes


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    """A member as webdataset's TarWriter writes it: mtime 0, root owner, mode 0444."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uname = info.gname = "root"
    return info


def write_tar_sample(tar: tarfile.TarFile, sample: dict[str, Any]) -> None:
    """Add one webdataset sample (``__key__`` + ``ext -> bytes``) as ``key.ext`` members.

    The members match webdataset's TarWriter (mtime 0, root owner, mode 0444), written with
    the standard library: importing webdataset imports torch, seconds of start-up.
    """
    key = sample["__key__"]
    for ext, data in sample.items():
        if ext != "__key__":
            tar.addfile(_member_info(f"{key}.{ext}", len(data)), io.BytesIO(data))


def tar_blob(sample: dict[str, Any]) -> bytes:
    """One sample as USTAR bytes (each member's header, then its data padded to a block), built
    in memory so that whatever fails (a name USTAR cannot hold...) fails before a write."""
    key, parts = sample["__key__"], []
    for ext, data in sample.items():
        if ext == "__key__":
            continue
        info = _member_info(f"{key}.{ext}", len(data))
        parts += [info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape"), data,
                  b"\0" * (-len(data) % BLOCK)]
    return b"".join(parts)


class TarAppender:
    """Appends whole samples to ``PATH.tmp``, renamed to ``PATH`` by :meth:`close`.

    A sample is serialized first and written at once; a write that fails half-way is cut back
    off, so the tar never holds half a sample whatever the caller does with the error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._file: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 (closed by close())

    def append(self, sample: dict[str, Any]) -> None:
        self.write(tar_blob(sample))

    def write(self, blob: bytes) -> None:
        """Append a :func:`tar_blob`; cut back off if the write fails half-way."""
        start = self._file.tell()
        try:
            self._file.write(blob)
        except BaseException:
            self._file.seek(start)
            self._file.truncate()
            raise

    def close(self) -> Path:
        """End the archive (two zero blocks, padded to tar's 10 KiB record) and rename it."""
        end = self._file.tell() + len(END_OF_ARCHIVE)
        self._file.write(END_OF_ARCHIVE + b"\0" * (-end % tarfile.RECORDSIZE))
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path


class TarDamage(ValueError):
    """A tar stops being whole at byte ``offset`` (the members before it are whole);
    ``member`` names the member whose header was read there, when one was."""

    def __init__(self, offset: int, size: int, reason: str, member: str | None = None) -> None:
        super().__init__(f"reading stopped at byte {offset} of {size}: {reason}")
        self.offset, self.size, self.reason, self.member = offset, size, reason, member


def open_tar(path: Path) -> tarfile.TarFile:
    """``path`` opened for :func:`tar_members` (``r:``, no compression), its first header
    checked like every later one (:func:`tar_members`) before tarfile reads it."""
    with open(path, "rb") as f:
        reason = _extended_header_problem(f, 0)
    if reason is not None:
        raise TarDamage(0, path.stat().st_size, reason)
    return tarfile.open(path, "r:")


def tar_members(tar: tarfile.TarFile, size: int) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar`` (:func:`open_tar` on a file of ``size`` bytes), one at a time
    and keeping no member list, then its end verified.

    ``tarfile`` takes a damaged header or a cut on a header boundary for the end of the
    archive; here the end must be two zero blocks then only zeros, a member's data must fit
    in the file and a pax / long-name header must stay under :data:`MAX_EXTENDED_HEADER`
    (both checked before they are read), else :class:`TarDamage` names the offset. Sparse
    members are yielded unchecked (their ``size`` is the expanded size): the caller must not
    read them.
    """
    while True:
        if tar.firstmember is None:  # the next header is not read yet
            reason = _extended_header_problem(tar.fileobj, tar.offset)
            if reason is not None:
                raise TarDamage(tar.offset, size, reason)
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise TarDamage(tar.offset, size, f"{type(e).__name__}: {e}") from None
        if member is None:
            break
        tar.members.clear()  # tarfile keeps every member it read; a stream needs none
        carries_data = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
        if carries_data and not member.issparse() and member.offset_data + member.size > size:
            raise TarDamage(member.offset, size,
                            f"member {member.name!r} declares {member.size} bytes of data, the "
                            f"file holds {max(0, size - member.offset_data)} after its header",
                            member.name)
        yield member
    reason = _end_problem(tar.fileobj, tar.offset, size)
    if reason is not None:
        raise TarDamage(tar.offset, size, reason)


def _extended_header_problem(fileobj: IO[bytes], offset: int) -> str | None:
    """Why the chain of pax / long-name headers at ``offset`` must not be read, else None."""
    pos = fileobj.tell()
    try:
        for _ in range(8):  # a member has a pax header and a long name or link at most
            fileobj.seek(offset)
            try:
                info = tarfile.TarInfo.frombuf(fileobj.read(BLOCK), tarfile.ENCODING,
                                               "surrogateescape")
            except tarfile.HeaderError:
                return None  # not a header: tarfile and the end check say what it is
            if info.type not in EXTENDED_TYPES:
                return None
            if info.size > MAX_EXTENDED_HEADER:
                return (f"an extended header ({info.type.decode()!r}) declares {info.size} "
                        f"bytes, over {MAX_EXTENDED_HEADER}: not read")
            offset += BLOCK + -(-info.size // BLOCK) * BLOCK
        return "more than 8 extended headers in a row"
    finally:
        fileobj.seek(pos)


def _end_problem(fileobj: IO[bytes], offset: int, size: int) -> str | None:
    """Why the archive does not end cleanly at ``offset``, else None."""
    fileobj.seek(offset)
    head = fileobj.read(BLOCK)
    if not head:
        return "the file ends after a member, without the end-of-archive blocks (cut?)"
    if head.strip(b"\0"):
        return f"unreadable header ({_header_error(head)}); {size - offset} bytes not read"
    pos = offset + len(head)
    while chunk := fileobj.read(1 << 20):
        rest = chunk.lstrip(b"\0")
        if rest:
            return (f"a zero block, then data at byte {pos + len(chunk) - len(rest)}: a member "
                    f"lost its header; {size - offset} bytes not read")
        pos += len(chunk)
    if size - offset < len(END_OF_ARCHIVE):
        return (f"the end-of-archive blocks are cut short ({size - offset} of "
                f"{len(END_OF_ARCHIVE)} bytes)")
    return None


def _header_error(block: bytes) -> str:
    if len(block) < BLOCK:
        return f"{len(block)} of {BLOCK} bytes, cut"
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError as e:
        return str(e)
    return "not a member header"


class QuarantineWriter:
    """Writes ``quarantine-0000.tar`` and ``quarantine.jsonl`` under ``out_dir``."""

    def __init__(self, out_dir: str | Path, fmt: str) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.tar_path = self.dir / "quarantine-0000.tar"
        self.ledger_path = self.dir / "quarantine.jsonl"
        self._tar = TarAppender(self.tar_path)
        self._ledger = open(self.ledger_path, "w", encoding="ascii")  # noqa: SIM115
        self.count = 0

    def write(self, item: Quarantined) -> QuarantineEntry:
        raw = item.raw[:RAW_LIMIT]
        entry = QuarantineEntry(self.fmt, item.key, item.location, item.rule, item.detail, len(raw))
        text = json.dumps(asdict(entry))  # ensure_ascii: lone surrogates stay escaped
        sample: dict[str, Any] = {"__key__": f"q-{self.count:07d}", "json": text.encode("ascii")}
        if raw:
            sample["raw"] = raw
        self._tar.append(sample)
        self._ledger.write(text + "\n")
        self.count += 1
        return entry

    def close(self) -> None:
        self._tar.close()
        self._ledger.close()

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_quarantine(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a quarantine tar: the JSON fields plus ``raw`` bytes (b"" when absent).

    Raises :class:`TarDamage` when the tar is not whole: a short quarantine is never read."""
    entries: dict[str, dict[str, Any]] = {}
    path = Path(path)
    with open_tar(path) as tar:
        for member in tar_members(tar, path.stat().st_size):
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            entry = entries.setdefault(key, {"raw": b""})
            if ext == "json":
                entry.update(json.loads(data))
            else:
                entry[ext] = data
    return list(entries.values())
