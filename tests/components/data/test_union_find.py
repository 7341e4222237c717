"""Disjoint sets: linked keys end in one group, the rest stay alone."""

from components.data.union_find import DisjointSets


def test_linked_keys_share_a_group_and_the_rest_stay_alone():
    sets = DisjointSets()
    for a, b in [("a", "b"), ("c", "d"), ("b", "d")]:
        sets.union(a, b)
    sets.find("e")
    groups = sorted(sorted(g) for g in sets.groups().values())
    assert groups == [["a", "b", "c", "d"], ["e"]]
    assert sets.find("a") == sets.find("c") != sets.find("e")
