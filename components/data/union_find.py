"""Disjoint sets over hashable keys (union-find with path halving): which items end up in one
group once every linked pair is joined."""

from __future__ import annotations

from collections.abc import Hashable


class DisjointSets:
    """Groups of keys; a key seen by `find` or `union` is a group of its own until joined."""

    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        """The representative of ``x``'s group."""
        while self.parent.setdefault(x, x) != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Hashable, b: Hashable) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> dict[Hashable, list[Hashable]]:
        """Representative -> the keys of its group, in first-seen order."""
        out: dict[Hashable, list[Hashable]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return out
