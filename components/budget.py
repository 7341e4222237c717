"""Memory budgets of the in-process caches, read from the environment in MiB."""

from __future__ import annotations

import os


def budget_bytes(env: str, default_mb: float) -> int:
    """The budget ``env`` names in MiB (``default_mb`` when unset; 0 turns a cache off), in bytes."""
    raw = os.environ.get(env, str(default_mb))
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{env} must be a number of MiB, got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"{env} must be >= 0, got {raw!r}")
    return int(mb * 2**20)
