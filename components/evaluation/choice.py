"""Read the chosen option letter out of a free-text answer (API models, generation)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["parse_choice"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BARE = re.compile(r"^\W*([A-Za-z])\W*$")  # "B", "(b)", "B.", "**B**"
_EXPLICIT = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?\s*[:(\[]?\s*([A-Z])(?![A-Za-z0-9'])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
# Capital letters that open an English sentence as a word ("A dog ...", "I think ...").
_WORD_LETTERS = {"A", "I"}
_NOT_WORD_FOLLOWERS = {"is", "was", "and", "or"}  # "A is correct", "A and C"
_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _norm_words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def _contains(words: list[str], sub: list[str]) -> bool:
    n = len(sub)
    return n > 0 and any(words[i : i + n] == sub for i in range(len(words) - n + 1))


def _is_word(text: str, match: re.Match) -> bool:
    """The capital is an article/pronoun: ``A``/``I`` followed by a lower-case word."""
    if match[1] not in _WORD_LETTERS:
        return False
    rest = re.match(r" ([a-z][a-z']*)", text[match.end():])
    return rest is not None and rest[1] not in _NOT_WORD_FOLLOWERS


def _by_text(text: str, options: Sequence[str]) -> str | None:
    """Letter of the one option whose words appear in the text (exact match first)."""
    words = _norm_words(text)
    opts = [_norm_words(o) for o in options]
    exact = [i for i, o in enumerate(opts) if o and o == words]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    found = [i for i, o in enumerate(opts) if _contains(words, o)]
    # an option contained in another found option ("red" in "dark red") does not count
    found = [i for i in found if not any(j != i and opts[j] != opts[i] and _contains(opts[j], opts[i])
                                         for j in found)]
    return LETTERS[found[0]] if len(found) == 1 else None


def parse_choice(text: str, n_options: int, options: Sequence[str] | None = None) -> str | None:
    """The option letter a free-text answer picks, or None when it cannot be told.

    In order: the whole answer is one letter (``"b"``, ``"(B)"``, ``"B."``); an explicit
    ``answer is B`` / ``Answer: (B)`` / ``option B``; the first standalone capital letter
    among the first ``n_options`` (an ``A``/``I`` followed by a lower-case word, as in
    ``"A dog"``, is read as a word); else, with ``options``, the single option whose text
    the answer contains (exact match first; ``"red"`` loses to a found ``"dark red"``).
    """
    if not 1 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be 1..{len(LETTERS)}, got {n_options}")
    if options is not None and len(options) != n_options:
        raise ValueError(f"{len(options)} options given for n_options={n_options}")
    valid = LETTERS[:n_options]
    bare = _BARE.match(text)
    if bare and bare[1].upper() in valid:
        return bare[1].upper()
    for match in _EXPLICIT.finditer(text):
        if match[1] in valid and not _is_word(text, match):
            return match[1]
    for match in _STANDALONE.finditer(text):
        if match[1] in valid and not _is_word(text, match):
            return match[1]
    if options is not None:
        return _by_text(text, options)
    return None
