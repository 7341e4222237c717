"""What an ingest reads of its source: the source file itself, or every file of a source
folder, each read or skipped with the reason -- so that no file is passed over unseen.

A folder's files are matched by the format's suffixes, exactly (``.jsonl``, not ``.JSONL``);
sub-folders are not searched. A file that is not read is skipped with its reason, and one that
*looks like input* -- a compressed form (``.jsonl.gz``, ``.tar.gz``, ``.tgz``) or a suffix in
another case (``.JSONL``), or a matching name that is not a regular file (a broken link, a
pipe) -- is ``counted``: the run quarantines it as one record (rule ``skipped_file``), so its
loss shows in the quarantine rate. Other files (an unknown suffix, a sub-folder, a sidecar
such as img2dataset's ``.parquet`` next to its tars) are only listed in the files ledger.
A source given as a file is read whatever its suffix, unless it is a compressed form of the
input (then it is that one counted, skipped record, not a stream of garbage lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".7z")
PACKED_ALIASES = {".tgz": ".tar", ".tbz2": ".tar", ".txz": ".tar"}


@dataclass(frozen=True)
class SourceFile:
    """One input of an ingest (a file, or a folder read whole), or a file that is not read."""

    path: Path
    skipped: str | None = None  # why it is not read; None: it is read
    counted: bool = False  # skipped but looks like input: one quarantined record


def plan(source: Path, suffixes: tuple[str, ...]) -> list[SourceFile]:
    """Every entry of the folder ``source`` (sorted by name), or the file ``source`` itself:
    read whatever its suffix (it was named), unless it is a compressed form of the input."""
    if source.is_dir():
        return [classify(p, suffixes) for p in sorted(source.iterdir())]
    entry = classify(source, suffixes)
    return [entry if entry.counted and (entry.skipped or "").startswith("compressed") else
            SourceFile(source)]


def classify(path: Path, suffixes: tuple[str, ...]) -> SourceFile:
    """Read ``path`` when its name ends with one of ``suffixes`` and it is a regular file;
    otherwise skip it with the reason (counted when it looks like input)."""
    name, wanted = path.name, ", ".join(suffixes)
    if path.is_dir():
        return SourceFile(path, "a folder: sub-folders are not read")
    if name.endswith(suffixes):
        if path.is_file():
            return SourceFile(path)
        return SourceFile(path, "not a regular file (a broken link, a pipe, a device)",
                          counted=True)
    inner, packed = _unpack(name.lower())
    if packed:
        if inner.endswith(suffixes):
            return SourceFile(path, f"compressed ({packed}): decompress it to ingest it",
                              counted=True)
        return SourceFile(path, f"compressed ({packed}), and not one of {wanted} inside")
    if name.lower().endswith(suffixes):
        suffix = name[len(name) - len(next(s for s in suffixes if name.lower().endswith(s))):]
        return SourceFile(path, f"suffix {suffix!r} in another case: suffixes are matched "
                                f"exactly ({wanted})", counted=True)
    return SourceFile(path, f"unknown suffix {path.suffix or '(none)'!r}: reads {wanted}")


def _unpack(name: str) -> tuple[str, str | None]:
    """(the name without its compression suffix, that suffix) -- or (name, None)."""
    for alias, inner in PACKED_ALIASES.items():
        if name.endswith(alias):
            return name[: -len(alias)] + inner, alias
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, None
