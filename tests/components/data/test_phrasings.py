"""Question phrasings: many in training, a held-out quarter that only the test split asks."""

from __future__ import annotations

import random
import re

import pytest

from components.data.synthetic.phrasings import TEMPLATES, phrase
from components.data.synthetic.questions import QTYPES


def words(template: str) -> set[str]:
    return set(re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", template.lower())))


@pytest.mark.parametrize("qtype", QTYPES)
def test_a_quarter_of_the_phrasings_is_held_out_and_made_of_seen_words(qtype):
    seen, unseen = TEMPLATES[qtype]
    assert len(unseen) * 4 == len(seen) + len(unseen) and not set(seen) & set(unseen)
    seen_words = set().union(*map(words, seen))
    for template in unseen:  # a new combination, never a new word
        assert words(template) <= seen_words, template


def test_the_canonical_phrasings_stay_in_training():
    rng = random.Random(0)
    canonical = {"What colour is the circle?", "What shape is the red object?",
                 "How many circles are there?", "Where is the red circle?", "Is there a red circle?"}
    asked = {phrase(q, rng, colour="red", shape="circle") for q in QTYPES for _ in range(400)}
    assert canonical <= asked
    held_out = {phrase(q, rng, unseen=True, colour="red", shape="circle")
                for q in QTYPES for _ in range(400)}
    assert not held_out & asked and "What color is that circle?" in held_out
    orange = {phrase("existence", rng, colour="orange", shape="circle") for _ in range(200)}
    assert not any(" a orange" in q for q in orange) and "Is there an orange circle?" in orange


def test_training_conversations_ask_the_canonical_phrasing_in_its_share():
    from components.data.synthetic.phrasings import CANONICAL_SHARE
    from components.data.synthetic.scenes import generate_vqa

    canonical = re.compile(r"What colour is the \w+\?$")
    colour = []
    for i in range(300):
        record = generate_vqa(0, i, "train").record
        asked = [m["content"][-1]["text"] for m in record["messages"] if m["role"] == "user"]
        colour += [q for q, t in zip(asked, record["qtypes"], strict=True) if t == "colour"]
    share = sum(bool(canonical.match(q)) for q in colour) / len(colour)
    assert len(colour) > 150 and abs(share - CANONICAL_SHARE) < 0.12, share
    assert len(set(colour)) > 20  # the other questions spread over the seen phrasings
    tests = [generate_vqa(0, i, "test").record for i in range(400)]
    seen_colour = [r["messages"][0]["content"][-1]["text"] for r in tests
                   if r["qtype"] == "colour" and r["phrasing"] == "seen"]
    assert sum(bool(canonical.match(q)) for q in seen_colour) < len(seen_colour) / 4  # uniform
