"""parse_choice: option letters out of free-text answers."""

from __future__ import annotations

import pytest

from components.evaluation.choice import parse_choice

OPTIONS = ["red", "dark red", "blue", "a dog"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("b", "B"),  # the whole answer is one letter: case does not matter
        ("(C)", "C"),
        ("D.", "D"),
        ("**A**", "A"),
        (" B\n", "B"),
        ("The answer is (C).", "C"),
        ("Answer: D", "D"),
        ("I choose option B.", "B"),
        ("B) dark red", "B"),
        ("C. blue", "C"),
        ("I think C", "C"),  # 'I' + lower-case word is the pronoun
        ("A dog is on the left, so B", "B"),  # 'A' + lower-case word is the article
        ("A is correct", "A"),
        ("A and C", "A"),  # the first standalone letter
        ("I'd say D", "D"),
        ("The correct option is B because A is wrong", "B"),
        ("E", None),  # outside the 4 options
        ("F is the one", None),
        ("I don't know", None),
        ("", None),
    ],
)
def test_letters(text, expected):
    assert parse_choice(text, 4) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("blue", "C"),
        ("It is Blue.", "C"),
        ("red", "A"),  # exact match
        ("It looks dark red to me", "B"),  # 'red' is inside the found 'dark red'
        ("the answer is a dog", "D"),  # 'a' is no letter here: 'a dog' matches option D
        ("red or blue", None),  # two options: cannot tell
        ("green", None),
    ],
)
def test_option_text_fallback(text, expected):
    assert parse_choice(text, 4, OPTIONS) == expected


def test_letter_wins_over_text_and_arguments_are_checked():
    assert parse_choice("B: blue", 4, OPTIONS) == "B"
    assert parse_choice("blue", 4) is None  # no options given
    with pytest.raises(ValueError, match="n_options"):
        parse_choice("A", 0)
    with pytest.raises(ValueError, match="3 options given"):
        parse_choice("A", 4, OPTIONS[:3])
