"""The bounds of an ingest, in one place: the per-record checks' bounds and the caps on what
one record may cost to read.

A record over a cap is quarantined with the rule ``over_limit`` (the detail names the cap and
its value) and the ingest goes on; a cap is checked before the bytes it guards are read or
decoded. This module imports nothing, so every reader can take a :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds shared by the per-record checks, the readers and the Great Expectations suite.

    ``max_images_per_record`` stays far below the 1000 images a shard's ``NNN.png`` names
    allow; ``max_members_per_sample`` leaves room for a sample's non-image members.
    """

    min_side: int = 8
    max_side: int = 4096
    max_text_chars: int = 20000
    max_members_per_sample: int = 128  # tar members sharing one key
    max_member_bytes: int = 64 * MiB  # one tar member, one image file
    max_images_per_record: int = 64  # images of one record (placeholders must match)
    max_record_bytes: int = 256 * MiB  # a record's input: its row or members, plus its images

    def over(self, name: str, value: int, what: str) -> str | None:
        """The ``over_limit`` detail when ``value`` exceeds the cap ``name``, else None."""
        cap = getattr(self, name)
        return f"{what}: {value} over {name}={cap}" if value > cap else None
