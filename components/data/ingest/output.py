"""Publishing an output folder so that a failure never costs the previous good one.

An ingest writes into a sibling of its output (``.OUT.partial``) and, once everything is
written and counted, :func:`replace_dir` moves it into place: the old ``OUT`` is first renamed
aside (``.OUT.old``), the new folder renamed in, and only then the old one deleted. Renames of
siblings stay on one file system, so each step is atomic; an ingest killed between the two
renames leaves ``.OUT.old`` whole, and :func:`restore` puts it back before the next run.
One ingest per output folder at a time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# what an ingest writes; an existing OUT holding anything else is not replaced
OUTPUT_NAMES = frozenset({"shards", "quarantine", "manifest.jsonl", "summary.json",
                          "validation.json"})


def sibling(out: Path, role: str) -> Path:
    """``.OUT.<role>`` beside ``out`` (hidden: never taken for an output)."""
    return out.with_name(f".{out.name}.{role}")


def rejected(out: Path) -> Path:
    """Where a completed ingest that failed its gate is kept for inspection: ``OUT.rejected``."""
    return out.with_name(f"{out.name}.rejected")


def check_replaceable(out: Path) -> None:
    """``out`` is absent, an empty folder or an earlier ingest's output; else ValueError (so a
    mistyped ``--out`` never deletes someone's folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
    if foreign:
        raise ValueError(f"--out {out} holds files an ingest does not write ({', '.join(foreign[:5])}"
                         f"{'...' if len(foreign) > 5 else ''}): refusing to replace it")


def restore(out: Path) -> None:
    """Put back an ``out`` lost between the two renames of an interrupted :func:`replace_dir`
    (or delete the leftover of one that completed)."""
    old = sibling(out, "old")
    if old.exists():
        if out.exists():
            shutil.rmtree(old)
        else:
            old.rename(out)


def begin(out: Path) -> Path:
    """A fresh, empty staging folder beside ``out`` (after :func:`restore`)."""
    restore(out)
    work = sibling(out, "partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` (a sibling of ``target``) at ``target``; the previous
    ``target`` is deleted only once ``new`` is in place."""
    old = sibling(target, "old")
    shutil.rmtree(old, ignore_errors=True)
    had = target.exists()
    if had:
        target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        if had:
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def discard(folder: Path) -> None:
    """Delete ``folder`` if it is an ingest's output (holds a ``summary.json``)."""
    if folder.is_dir() and (folder / "summary.json").is_file():
        shutil.rmtree(folder)
