"""Synthetic generators: determinism by seed and the data contract of every family."""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest

from components.data.corpus import generate_sample
from components.data.sample import Sample, image_placeholders, message_text
from components.data.synthetic import FAMILIES, SOURCES, generator
from components.data.synthetic.ocr import MIN_CONTRAST, luminance
from components.data.synthetic.questions import QTYPES, ask, conversation
from components.data.synthetic.scene import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_BACKGROUNDS,
    QUADRANTS,
    SHAPES,
    Scene,
    SceneObject,
)

# the words that say what a question of each type asks, whatever its phrasing
ASKS: dict[str, set[str]] = {
    "colour": {"colour", "color"}, "shape": {"shape"}, "count": {"many", "count", "number"},
    "position": {"where", "where's", "quadrant", "corner", "part"},
    "existence": {"there", "see", "show", "contain", "in"},
}


def png(sample: Sample) -> list[bytes]:
    out = []
    for image in sample.images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def check_contract(sample: Sample, split: str) -> None:
    """Rules every record obeys, whatever its family."""
    record = sample.record
    json.dumps(record)  # JSON-serialisable
    assert record["source"] in SOURCES
    assert sample.key.startswith(f"{record['source']}-{split}-")
    messages = record["messages"]
    assert messages and messages[0]["role"] == "user"
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2) + (
        ["user"] if len(messages) % 2 else []
    )
    assert image_placeholders(messages) == len(sample.images)
    assert all(message_text(m) for m in messages)
    for image in sample.images:
        assert image.mode == "RGB"
    single = sum(m["role"] == "user" for m in messages) == 1
    if single or split == "test":
        assert record["answers"] and all(isinstance(a, str) and a for a in record["answers"])


def named(question: str) -> tuple[list[str], list[str]]:
    """The colour and shape words a question names (plural shapes singular)."""
    words = re.findall(r"[a-z']+", question.lower())
    shapes = [w.removesuffix("s") for w in words if w.removesuffix("s") in SHAPES]
    return [w for w in words if w in COLOURS], shapes


def check_qa(qtype: str, question: str, answer: str, objects: list[dict[str, str]]) -> None:
    """One scene question of ``qtype``, in any phrasing: it asks what its type asks, about the
    objects it names, and the answer is right for the scene's objects."""
    assert answer == answer.lower() and not answer.endswith((".", "?", "!"))
    assert question[0].isupper() and question.endswith(("?", ".")), question
    assert ASKS[qtype] & set(re.findall(r"[a-z']+", question.lower())), (qtype, question)
    colours, shapes = named(question)
    if qtype == "colour":
        assert colours == [] and len(shapes) == 1, question
        matching = [o for o in objects if o["shape"] == shapes[0]]
        assert len(matching) == 1 and matching[0]["colour"] == answer
    elif qtype == "shape":
        assert len(colours) == 1 and shapes == [], question
        matching = [o for o in objects if o["colour"] == colours[0]]
        assert len(matching) == 1 and matching[0]["shape"] == answer
    elif qtype == "count":
        assert colours == [] and len(shapes) == 1, question
        assert answer == str(sum(o["shape"] == shapes[0] for o in objects))
    else:
        assert len(colours) == 1 and len(shapes) == 1, question
        named_obj = (colours[0], shapes[0])
        matching = [o for o in objects if (o["colour"], o["shape"]) == named_obj]
        if qtype == "position":
            assert len(matching) == 1 and matching[0]["quadrant"] == answer
        else:
            assert answer == ("yes" if matching else "no")


def check_scene_objects(objects: list[dict[str, str]]) -> None:
    assert 1 <= len(objects) <= 3
    assert len({o["quadrant"] for o in objects}) == len(objects)
    assert len({(o["colour"], o["shape"]) for o in objects}) == len(objects)
    assert [o["quadrant"] for o in objects] == sorted(
        (o["quadrant"] for o in objects), key=QUADRANTS.index
    )
    for o in objects:
        assert o["colour"] in COLOURS and o["shape"] in SHAPES and o["quadrant"] in QUADRANTS


@pytest.mark.parametrize("source", SOURCES)
def test_same_seed_same_sample_other_seed_differs(source: str) -> None:
    a = [generate_sample(source, 3, "train", i) for i in range(4)]
    b = [generate_sample(source, 3, "train", i) for i in range(4)]
    c = [generate_sample(source, 4, "train", i) for i in range(4)]
    assert [s.record for s in a] == [s.record for s in b]
    assert [png(s) for s in a] == [png(s) for s in b]
    assert [(s.record, png(s)) for s in a] != [(s.record, png(s)) for s in c]
    # the index and the split are part of a sample's identity too
    assert a[0].record != a[1].record or png(a[0]) != png(a[1])
    assert generate_sample(source, 3, "val", 0).key != a[0].key


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_contract(source: str, split: str) -> None:
    for i in range(30):
        check_contract(generate_sample(source, 0, split, i, image_size=48), split)


def test_image_size_is_honoured() -> None:
    for source in ("scenes_caption", "scenes_vqa", "ocr", "preference"):
        sample = generate_sample(source, 0, "train", 0, image_size=40)
        assert [im.size for im in sample.images] == [(40, 40)]
    assert generate_sample("text", 0, "train", 0).images == []


def test_captions_describe_objects_with_paraphrases() -> None:
    for i in range(40):
        sample = generate_sample("scenes_caption", 1, "test", i)
        record = sample.record
        check_scene_objects(record["objects"])
        assert record["task"] == "caption"
        caption = message_text(record["messages"][1])
        assert record["answers"][0] == caption and len(set(record["answers"])) == 4
        expected = [
            f"{'an' if o['colour'][0] in 'aeiou' else 'a'} {o['colour']} {o['shape']} at the {o['quadrant']}"
            for o in record["objects"]
        ]
        joined = (
            expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + " and " + expected[-1]
        )
        assert caption == joined + "."


def test_scene_pixels_show_the_objects() -> None:
    """Each object's colour dominates some pixels of its quadrant."""
    for i in range(20):
        sample = generate_sample("scenes_caption", 0, "train", i)
        pixels = np.asarray(sample.images[0]).astype(int)
        half = pixels.shape[0] // 2
        for o in sample.record["objects"]:
            q = QUADRANTS.index(o["quadrant"])
            block = pixels[
                (q // 2) * half : (q // 2 + 1) * half, (q % 2) * half : (q % 2 + 1) * half
            ]
            hit = (np.abs(block - np.array(COLOURS[o["colour"]])).sum(-1) < 10).sum()
            assert hit >= 0.05 * half * half


def test_vqa_test_split_single_question_answers_match_objects() -> None:
    qtypes: Counter[str] = Counter()
    existence: Counter[bool] = Counter()
    negatives: Counter[str] = Counter()
    phrasings: Counter[tuple[str, str]] = Counter()
    for i in range(200):
        record = generate_sample("scenes_vqa", 0, "test", i).record
        check_scene_objects(record["objects"])
        assert len(record["messages"]) == 2
        question, answer = (message_text(m) for m in record["messages"])
        assert record["answers"] == [answer]
        qtype = record["qtype"]
        check_qa(qtype, question, answer, record["objects"])
        qtypes[qtype] += 1
        phrasings[qtype, record["phrasing"]] += 1
        if qtype == "existence":
            assert record["absent"] == (answer == "no")
            existence[record["absent"]] += 1
            if record["absent"]:
                negatives[record["negative"]] += 1
                if record["negative"] == "hard":
                    (colour,), (shape,) = named(question)
                    assert any(
                        o["colour"] == colour or o["shape"] == shape for o in record["objects"]
                    )
        else:
            assert "absent" not in record
    assert set(qtypes) == set(QTYPES) and set(qtypes.values()) == {40}
    assert existence[True] == existence[False] == 20
    assert negatives["hard"] == negatives["random"] == 10
    assert set(phrasings.values()) == {20}  # each type: half seen, half held-out phrasings


def test_a_quarter_of_the_test_questions_look_at_a_style_training_never_draws() -> None:
    def page(sample: Sample) -> tuple[int, ...]:  # the outermost pixels: no object reaches them
        pixels = np.asarray(sample.images[0])
        ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        return tuple(int(v) for v in np.median(ring, axis=0))

    def nearest(colour: tuple[int, ...], palette) -> float:
        return min(float(np.abs(np.subtract(colour, p)).max()) for p in palette)

    styles: Counter[tuple[str, str]] = Counter()
    for i in range(0, 160, 2):
        sample = generate_sample("scenes_vqa", 0, "test", i)
        style = sample.record["style"]
        styles[sample.record["qtype"], style] += 1
        assert nearest(page(sample), HELD_OUT_BACKGROUNDS if style == "unseen" else BACKGROUNDS) <= 3
        assert sample.images[0].size == ((80, 80) if style == "unseen" else (64, 64))
    assert {n for (_, style), n in styles.items() if style == "unseen"} == {4}
    assert sum(styles.values()) == 4 * sum(n for (_, s), n in styles.items() if s == "unseen")
    for i in range(40):  # training: only the seen backgrounds
        assert nearest(page(generate_sample("scenes_vqa", 0, "train", i)), BACKGROUNDS) <= 3


def test_vqa_train_is_one_multi_turn_conversation() -> None:
    existence: Counter[str] = Counter()
    for i in range(100):
        sample = generate_sample("scenes_vqa", 0, "train", i)
        messages = sample.record["messages"]
        assert 6 <= len(messages) <= 10 and len(sample.images) == 1
        assert messages[0]["content"][0] == {"type": "image"}
        assert image_placeholders(messages[1:]) == 0
        pairs = [
            (message_text(q), message_text(a))
            for q, a in zip(messages[::2], messages[1::2], strict=True)
        ]
        assert len({q for q, _ in pairs}) == len(pairs)
        kinds = sample.record["qtypes"]
        for kind, (q, a) in zip(kinds, pairs, strict=True):
            check_qa(kind, q, a, sample.record["objects"])
        assert len(set(kinds)) >= 2
        existence.update(a for kind, (_, a) in zip(kinds, pairs, strict=True) if kind == "existence")
    assert 0.35 < existence["yes"] / (existence["yes"] + existence["no"]) < 0.65


def test_preference_pairs() -> None:
    kinds: Counter[str] = Counter()
    for i in range(200):
        sample = generate_sample("preference", 0, "train", i)
        record = sample.record
        assert [m["role"] for m in record["messages"]] == ["user"]
        assert record["chosen"] != record["rejected"] and record["answers"] == [record["chosen"]]
        kinds[record["hallucination"]] += 1
        prompt = message_text(record["messages"][0])
        if record["hallucination"] == "existence":
            check_qa("existence", prompt, record["chosen"], record["objects"])
            assert {record["chosen"], record["rejected"]} == {"yes", "no"}
        else:
            assert prompt == "Describe the image."
            assert record["chosen"] == generate_caption_text(record["objects"])
            assert record["hallucination"] in ("object", "attribute")
    assert 70 <= kinds["existence"] <= 130 and kinds["object"] > 20 and kinds["attribute"] > 20


def generate_caption_text(objects: list[dict[str, Any]]) -> str:
    from components.data.synthetic.scene import SceneObject, caption

    return caption([SceneObject(**o) for o in objects])


def test_ocr_text_and_contrast() -> None:
    fonts = set()
    for i in range(40):
        sample = generate_sample("ocr", 0, "train", i)
        record = sample.record
        text = record["answers"][0]
        assert message_text(record["messages"][1]) == text
        assert message_text(record["messages"][0]) == "What is written in the image?"
        assert re.fullmatch(r"[a-z]{3,7}( [a-z]{3,7})?|\d{1,4}", text)
        fonts.add(record["font"])
        # some pixels (the glyphs) contrast with the background's median colour by >= 3
        pixels = np.asarray(sample.images[0]).reshape(-1, 3)
        bg = float(luminance(np.median(pixels, axis=0)))
        lum = luminance(pixels)
        ratio = (np.maximum(lum, bg) + 0.05) / (np.minimum(lum, bg) + 0.05)
        assert (ratio >= 0.9 * MIN_CONTRAST).sum() > 10, f"{sample.key}: no contrasting text pixels"
    assert len(fonts) >= 5


@pytest.mark.parametrize(
    ("pattern", "check"),
    [
        (r"What is (\d+) \+ (\d+)\?", lambda m: str(int(m[1]) + int(m[2]))),
        (r"What is (\d+) - (\d+)\?", lambda m: str(int(m[1]) - int(m[2]))),
        (r"Reverse the word (\w+)\.", lambda m: m[1][::-1]),
        (r"What comes after (\d+)\?", lambda m: str(int(m[1]) + 1)),
        (r"Which is larger, (\d+) or (\d+)\?", lambda m: str(max(int(m[1]), int(m[2])))),
        (r"Repeat: (.+)", lambda m: m[1]),
    ],
)
def test_text_tasks_answers(pattern: str, check: Any) -> None:
    seen = 0
    for i in range(150):
        record = generate_sample("text", 0, "train", i).record
        question, answer = (message_text(m) for m in record["messages"])
        if m := re.fullmatch(pattern, question):
            assert answer == check(m) and record["answers"] == [answer]
            seen += 1
    assert seen > 0


def test_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        generate_sample("nope", 0, "train", 0)
    assert set(FAMILIES) == set(SOURCES) and all(callable(generator(s)) for s in SOURCES)


def test_shape_question_names_the_shape_of_the_only_object_of_a_colour() -> None:
    rng = random.Random(0)
    scene = Scene((SceneObject("red", "circle", "top left"), SceneObject("blue", "square", "top right"),
                   SceneObject("blue", "triangle", "bottom left")), (255, 255, 255))
    qa = ask(scene, rng, "shape")
    assert qa.answer == "circle" and qa.phrasing == "seen"
    check_qa("shape", qa.question, qa.answer, [o.as_dict() for o in scene.objects])
    same = Scene((SceneObject("blue", "square", "top left"), SceneObject("blue", "circle", "top right")),
                 (255, 255, 255))
    with pytest.raises(ValueError, match="colour that occurs exactly once"):
        ask(same, rng, "shape")
    assert all(qa.qtype != "shape" for qa in conversation(same, rng, 5))
