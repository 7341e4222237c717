"""Terminal progress bars for long work (data shards, training steps, evaluation batches).

A thin wrapper over tqdm. By default a bar draws only when its stream (stderr) is a
TTY, so logs, CI and Prefect workers stay quiet; VLMFORGE_PROGRESS=1 forces bars on
and VLMFORGE_PROGRESS=0 forces them off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

ENV = "VLMFORGE_PROGRESS"
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def disabled() -> bool | None:
    """tqdm's ``disable``: False (forced on), True (forced off) or None (on when a TTY)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in _ON:
        return False
    if value in _OFF:
        return True
    return None


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str | None = None, unit: str = "it", file: IO[str] | None = None,
             enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar following VLMFORGE_PROGRESS; ``enabled=False`` silences it (e.g. on a
    non-main rank). Use as a context manager or iterate over it; the bar does not stay
    on screen once closed."""
    disable = True if not enabled else disabled()
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, disable=disable, **kwargs)
