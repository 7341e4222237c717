"""Reading tar shards safely, shared by the tar formats (``webdataset``, ``webdataset-captions``).

A tar is read member by member with :mod:`tarfile`, never extracted, keeping no member list,
and its end is verified (:func:`components.data.quarantine.tar_members`). Per member, before
any data is read: an absolute path, a ``..`` component or a link/device quarantines its
sample (``unsafe_path``); a sparse member (``unsafe_member``); a member over
``Limits.max_member_bytes``, a sample over ``max_members_per_sample`` members or
``max_record_bytes`` bytes (``over_limit``). Where the tar stops being whole (a cut, a damaged
header, no end-of-archive blocks) the sample being read is quarantined as ``truncated_tar``
with the byte offset; the samples before it are whole, and nothing after it can be located.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from components.data.ingest.images import check_relative
from components.data.ingest.records import Candidate, Item, file_failure, guarded
from components.data.quarantine import Quarantined, Reject, TarDamage, open_tar, tar_members

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits


@dataclass
class TarGroup:
    """The members of one tar sample (``key.ext`` -> bytes), or why it cannot be used."""

    key: str
    location: str
    members: dict[str, bytes] = field(default_factory=dict)
    bad: Reject | None = None
    count: int = 0  # members seen, read or not
    nbytes: int = 0  # bytes read into ``members``

    def refuse(self, reject: Reject) -> None:
        """Keep the first problem; no further member is read into a refused group."""
        self.bad = self.bad or reject


Builder = Callable[[TarGroup], Candidate]


def shard_items(path: Path, limits: Limits, build: Builder, raw_members: tuple[str, ...],
                name: Callable[[str], str] = str) -> Iterator[Item]:
    """``build(group)`` per sample of a shard; a bad group, or a Reject ``build`` raises,
    becomes a :class:`Quarantined` keyed ``name(member key)`` holding the first present of
    ``raw_members`` as its raw input."""
    for group in tar_groups(path, limits):
        if isinstance(group, Quarantined):
            yield group
            continue
        key = name(group.key)
        raw = next((group.members[m] for m in raw_members if m in group.members), b"")
        if group.bad is not None:
            yield Quarantined(key, group.location, group.bad.rule, group.bad.detail, raw)
        else:
            yield guarded(key, group.location, raw, lambda g=group: build(g))


def split_name(name: str) -> tuple[str, str]:
    """webdataset's member naming: ``dir/key.ext`` -> (``dir/key``, ``ext``)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def tar_groups(path: Path, limits: Limits) -> Iterator[TarGroup | Quarantined]:
    """The samples of one shard (consecutive members sharing a key), read one member at a
    time; a file that does not open is one :class:`Quarantined`; where the tar stops being
    whole, the sample being read ends it as a group marked ``truncated_tar``."""
    size = path.stat().st_size
    if size == 0:
        yield file_failure(path, Reject("empty_file", f"{path.name}: 0 bytes"))
        return
    try:
        tar = open_tar(path)
    except (tarfile.TarError, OSError, ValueError) as e:
        yield file_failure(path, Reject("unreadable_file", f"{path.name}: not a tar at byte 0: "
                                                           f"{type(e).__name__}: {e}"))
        return
    group: TarGroup | None = None
    with tar:
        try:
            for member in tar_members(tar, size):
                mkey, ext = split_name(member.name)
                if group is None or mkey != group.key:
                    if group is not None:
                        yield group
                    group = TarGroup(mkey, f"{path}:{mkey}")
                _add(tar, member, ext, group, limits, size)
        except TarDamage as damage:
            damaged = split_name(damage.member)[0] if damage.member is not None else None
            if group is not None and damaged is not None and damaged != group.key:
                yield group  # whole: the damage is in the next sample's first member
                group = TarGroup(damaged, f"{path}:{damaged}")
            yield _truncated(path, group, damage)
            return
    if group is not None:
        yield group


def _add(tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, group: TarGroup,
         limits: Limits, size: int) -> None:
    """Read ``member`` into ``group`` unless it, or the group, breaks a rule or a cap."""
    group.count += 1
    problem = _member_problem(member, group, limits)
    if problem is not None:
        group.refuse(problem)
    if group.bad is not None:
        return
    try:
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise TarDamage(member.offset, size, f"{type(e).__name__}: {e}", member.name) from None
    group.members[ext] = data
    group.nbytes += len(data)


def _member_problem(member: tarfile.TarInfo, group: TarGroup, limits: Limits) -> Reject | None:
    """The first rule or cap ``member`` breaks, checked on its header alone."""
    try:
        check_relative(member.name)
    except Reject as r:
        return r
    if member.issparse():
        return Reject("unsafe_member", f"member {member.name!r} is sparse: {member.size} bytes "
                                       "declared, not stored; never read")
    if not member.isfile():
        return Reject("unsafe_path", f"member {member.name!r} is not a regular file")
    over = (limits.over("max_members_per_sample", group.count, f"sample {group.key!r} members")
            or limits.over("max_member_bytes", member.size, f"member {member.name!r} bytes")
            or limits.over("max_record_bytes", group.nbytes + member.size,
                           f"sample {group.key!r} bytes"))
    return Reject("over_limit", over) if over else None


def _truncated(path: Path, group: TarGroup | None, damage: TarDamage) -> TarGroup:
    """The sample being read where the tar stopped being whole: it may have lost members."""
    where = f"{path.name}: {damage}"
    if group is None:
        return TarGroup(path.name, f"{path}@{damage.offset}", {}, Reject("truncated_tar", where))
    detail = (f"{where}; sample {group.key!r} was being read (it may have lost members) and "
              "nothing after it can be located")
    return TarGroup(group.key, f"{path}@{damage.offset}:{group.key}", group.members,
                    Reject("truncated_tar", detail))
