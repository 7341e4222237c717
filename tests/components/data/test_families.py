"""The generator families beyond the default corpus: determinism, the data contract and
family-specific truths (answers that follow from what was drawn)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from components.data.corpus import generate_sample
from components.data.sample import Sample, image_placeholders, message_text
from components.data.synthetic import EXTRA_SOURCES, SOURCE_TASK, SOURCES, TEXT_ONLY_SOURCES
from components.data.synthetic.drawing import CELLS


def png(sample: Sample) -> list[bytes]:
    out = []
    for image in sample.images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def question(sample: Sample, turn: int = 0) -> str:
    users = [m for m in sample.record["messages"] if m["role"] == "user"]
    parts = [p["text"] for p in users[turn]["content"] if p.get("type") == "text"]
    return parts[-1]


def answer(sample: Sample) -> str:
    return sample.record["answers"][0]


def test_registry_keeps_the_default_five_first_and_every_source_has_a_task() -> None:
    assert SOURCES[:5] == ("scenes_caption", "scenes_vqa", "ocr", "text", "preference")
    assert set(SOURCE_TASK) == set(SOURCES) and len(EXTRA_SOURCES) >= 12
    assert set(TEXT_ONLY_SOURCES) <= set(SOURCES)


@pytest.mark.parametrize("source", EXTRA_SOURCES)
def test_deterministic_by_seed_and_independent_of_order(source: str) -> None:
    a = [generate_sample(source, 5, "train", i) for i in range(3)]
    b = [generate_sample(source, 5, "train", i) for i in reversed(range(3))][::-1]
    assert [s.record for s in a] == [s.record for s in b]
    assert [png(s) for s in a] == [png(s) for s in b]
    c = [generate_sample(source, 6, "train", i) for i in range(3)]
    assert [(s.record, png(s)) for s in a] != [(s.record, png(s)) for s in c]


@pytest.mark.parametrize("source", EXTRA_SOURCES)
def test_contract(source: str) -> None:
    for split in ("train", "test"):
        for i in range(10):
            sample = generate_sample(source, 0, split, i, image_size=48)
            record = sample.record
            json.dumps(record)
            assert sample.key == f"{source}-{split}-{i:07d}"
            assert record["source"] == source and record["task"] == SOURCE_TASK[source]
            messages = record["messages"]
            roles = [m["role"] for m in messages]
            assert roles[0] == "user"
            assert all(x != y for x, y in zip(roles, roles[1:], strict=False))
            assert image_placeholders(messages) == len(sample.images)
            assert all(message_text(m).strip() for m in messages)
            assert record["answers"] and all(isinstance(a, str) and a for a in record["answers"])
            if record["task"] == "preference":
                assert record["chosen"] and record["rejected"]
                assert record["chosen"] != record["rejected"]
            else:
                assert message_text(messages[-1]) == record["answers"][0]
            assert (source in TEXT_ONLY_SOURCES) == (not sample.images)
            for image in sample.images:
                assert image.mode == "RGB" and 8 <= min(image.size) and max(image.size) <= 4096


def test_square_families_honour_the_image_size_and_documents_are_high_resolution() -> None:
    for source in ("scenes_alt_caption", "scenes_relations", "ocr_wild", "counting", "geometry",
                   "spot_difference", "interleaved", "preference_hallucination"):
        sample = generate_sample(source, 0, "train", 1, image_size=40)
        assert {im.size for im in sample.images} == {(40, 40)}, source
    page = generate_sample("documents", 0, "train", 0, image_size=64).images[0]
    assert page.width >= 384 and page.height > page.width  # A5 portrait, 6x the image size


def test_alt_text_captions_are_noisy_versions_of_the_dense_caption() -> None:
    samples = [generate_sample("scenes_alt_caption", 0, "train", i) for i in range(60)]
    noise = {n for s in samples for n in s.record["noise"]}
    assert noise == {"missing_objects", "wrong_count", "dropped_colour", "filler"}
    for s in samples:
        dense = s.record["dense_caption"]
        assert answer(s) != dense and len(answer(s)) < len(dense) + 30
        named = [o for o in s.record["objects"] if f"{o['colour']} {o['shape']}" in answer(s)]
        assert len(named) < len(s.record["objects"]) or "missing_objects" not in s.record["noise"]


def test_relation_answers_follow_the_layout() -> None:
    pattern = re.compile(r"^Is the (\w+ \w+) to the (left|right) of the (\w+ \w+)\?$")
    checked = 0
    for i in range(80):
        s = generate_sample("scenes_relations", 0, "test", i)
        objs = {f"{o['colour']} {o['shape']}": o for o in s.record["objects"]}
        q, a = question(s), answer(s)
        if m := pattern.match(q):
            col = {name: CELLS.index(o["cell"]) % 3 for name, o in objs.items()}
            left = col[m[1]] < col[m[3]]
            assert a == ("yes" if left == (m[2] == "left") else "no")
            checked += 1
        elif q.endswith("small or large?"):
            assert a == objs[q.removeprefix("Is the ").removesuffix(" small or large?")]["size"]
            checked += 1
    assert checked >= 20


def test_counting_answers_recount_the_objects() -> None:
    for i in range(40):
        s = generate_sample("counting", 0, "train", i)
        q, objs = question(s), s.record["objects"]
        if m := re.match(r"^How many (\w+) (\w+)s are there\?$", q):
            expected = sum((o["colour"], o["shape"]) == (m[1], m[2]) for o in objs)
        elif m := re.match(r"^How many (\w+)s are there\?$", q):
            expected = sum(o["shape"] == m[1] for o in objs)
        else:
            expected = len(objs)
        assert answer(s) == str(expected)


def test_ocr_wild_uses_many_fonts_backgrounds_and_rotations() -> None:
    from components.data.synthetic.fonts import available_fonts
    from components.data.synthetic.ocr import contrast_ratio, luminance
    from components.data.synthetic.ocr_wild import MIN_CONTRAST

    families = {re.sub(r"(-|Bol|Ita|Condensed).*", "", p.rsplit("/", 1)[-1]) for p in
                available_fonts()}
    assert {"DejaVuSans", "DejaVuSerif", "DejaVuSansMono"} <= families
    samples = [generate_sample("ocr_wild", 0, "train", i, image_size=96) for i in range(60)]
    assert {s.record["background"] for s in samples} == {"flat", "gradient", "noise", "texture",
                                                          "photo"}
    assert len({s.record["font"] for s in samples}) >= 10
    assert any(abs(s.record["rotation"]) > 10 for s in samples)
    assert len({s.record["text_height"] for s in samples}) > 10
    for s in samples:
        assert s.record["answers"] == [message_text(s.record["messages"][1])]
        if s.record["background"] == "flat":  # text colour >= the floor; strokes reach it
            pixels = np.asarray(s.images[0]).reshape(-1, 3)
            colours, counts = np.unique(pixels, axis=0, return_counts=True)
            lum = luminance(colours)
            bg = lum[counts.argmax()]
            assert contrast_ratio(bg, float(luminance(np.array(s.record["colour"])))) >= 3.0
            assert max(contrast_ratio(bg, x) for x in lum) >= 0.7 * MIN_CONTRAST, s.key


def test_digits_print_the_answer_small_and_dark_anywhere_on_a_light_page() -> None:
    from components.data.synthetic.digits import GLYPH_PX, MARGIN, PROMPT

    samples = [generate_sample("digits", 0, "train", i) for i in range(80)]
    assert {len(s.record["answers"][0]) for s in samples} == {1, 2, 3}
    assert len({s.record["font"] for s in samples}) >= 3
    lefts = []
    for s in samples:
        answer = s.record["answers"][0]
        assert answer.isdigit() and message_text(s.record["messages"][1]) == answer
        assert message_text(s.record["messages"][0]) == PROMPT
        pixels = np.asarray(s.images[0]).astype(int)
        ink = pixels.max(-1) < min(s.record["paper"]) - 60  # dark strokes on the light page
        ys, xs = np.nonzero(ink)
        assert len(ys), s.key
        assert GLYPH_PX[0] - 3 <= ys.max() - ys.min() + 1 <= GLYPH_PX[1], s.key
        assert MARGIN - 1 <= min(xs.min(), ys.min()) and max(xs.max(), ys.max()) <= 64 - MARGIN
        lefts.append(xs.min())
    assert max(lefts) - min(lefts) > 30  # placed anywhere, not centred


def test_document_text_is_really_in_the_pdf_and_answers_quote_it() -> None:
    import pypdfium2 as pdfium

    from components.data.synthetic import documents

    for i in range(4):
        s = generate_sample("documents", 0, "test", i * 4)  # the "heading" question type
        heading = re.match(r'^What is written under the heading "(.+)"\?$', question(s))[1]
        assert heading in s.record["headings"]
        rng_free = documents.build_pdf(s.record["title"], [(heading, answer(s))],
                                       s.record["font"], s.record["body_pt"])
        page = pdfium.PdfDocument(rng_free)[0]
        text = page.get_textpage().get_text_range()
        assert " ".join(text.split()) == " ".join(f"{s.record['title']} {heading} {answer(s)}"
                                                  .split())
    s = generate_sample("documents", 0, "test", 3)
    lines = answer(s).split("\n")
    assert lines[0] == s.record["title"] and lines[1] == s.record["headings"][0]


def test_chart_and_table_answers_come_from_their_data() -> None:
    for i in range(30):
        s = generate_sample("charts", 0, "train", i)
        labels, values = s.record["labels"], s.record["values"]
        if s.record["qtype"] == "value":
            label = re.search(r"(?:of|in|is) (\w+)\?$", question(s))[1]
            suffix = "%" if s.record["kind"] == "pie" else ""
            assert answer(s) == f"{values[labels.index(label)]}{suffix}"
        elif s.record["qtype"] == "largest":
            assert answer(s) == labels[values.index(max(values))]
        if s.record["kind"] == "pie":
            assert sum(values) == 100
    for i in range(30):
        s = generate_sample("tables", 0, "train", i)
        header, rows = s.record["header"], s.record["rows"]
        if m := re.match(r"^What is the (\w+) of (\w+)\?$", question(s)):
            row = next(r for r in rows if r[0] == m[2])
            assert message_text(s.record["messages"][1]) == row[header.index(m[1])]
        if question(s).startswith("Convert the table"):
            assert message_text(s.record["messages"][1]).count("\n") == len(rows) + 1


def test_geometry_answers() -> None:
    for i in range(40):
        s = generate_sample("geometry", 0, "train", i)
        kind = s.record["kind"]
        if kind == "angle":
            assert answer(s) == str(s.record["degrees"]) and s.record["degrees"] % 15 == 0
        elif kind == "angle_type":
            d = s.record["degrees"]
            assert answer(s) == ("acute" if d < 90 else "right" if d == 90 else "obtuse")
        elif kind == "sides":
            assert 3 <= int(answer(s)) <= 8
        elif kind == "compare":
            assert answer(s) in ("red", "blue")


def test_spot_the_difference_images_differ_in_one_cell_only() -> None:
    for i in range(20):
        s = generate_sample("spot_difference", 0, "train", i, image_size=90)
        a, b = (np.asarray(im, dtype=np.int16) for im in s.images)
        ys, xs = np.nonzero(np.abs(a - b).sum(axis=2))
        assert len(ys), "the two images are identical"
        cells = {(int(y) // 30) * 3 + int(x) // 30 for y, x in zip(ys, xs, strict=True)}
        assert len(cells) == 1
        assert CELLS[cells.pop()] in answer(s)


def test_interleaved_documents_put_images_between_paragraphs() -> None:
    for i in range(10):
        s = generate_sample("interleaved", 0, "train", i)
        content = s.record["messages"][0]["content"]
        kinds = [p["type"] for p in content]
        assert 2 <= len(s.images) <= 4 and kinds.count("image") == len(s.images)
        assert kinds[0] == "text" and kinds[-1] == "text" and "image" in kinds[1:-1]
        assert "figure" in message_text(s.record["messages"][0]).lower()
        if m := re.match(r"^How many shapes are in figure (\d)\?$", question(s)):
            assert answer(s) == str(len(s.record["figures"][int(m[1]) - 1]))


def test_instruction_answers_are_exact() -> None:
    for i in range(60):
        s = generate_sample("instructions", 0, "train", i)
        q, a = question(s), answer(s)
        if m := re.match(r"^What is (\d+) times (\d+)\?$", q):
            assert a == str(int(m[1]) * int(m[2]))
        elif m := re.match(r"^Sort these numbers from smallest to largest: (.+)\.$", q):
            assert a == ", ".join(map(str, sorted(int(x) for x in m[1].split(", "))))
        elif s.record["kind"] == "chat":  # the last answer needs the first message
            first = message_text(s.record["messages"][0])
            assert len(s.record["messages"]) >= 4 and (a in first or a[::-1] in first)


def test_preference_pairs_differ_by_one_hallucination() -> None:
    kinds = set()
    for i in range(40):
        s = generate_sample("preference_hallucination", 0, "train", i)
        r = s.record
        kinds.add(r["hallucination"])
        assert r["chosen"] == answer(s) and r["chosen"] != r["rejected"]
        if r["hallucination"] == "object":
            assert r["rejected"].count(" at the ") == r["chosen"].count(" at the ") + 1
    assert kinds == {"object", "attribute", "count"}


def test_grid_command_writes_a_png_per_source(tmp_path) -> None:
    from PIL import Image

    from components.data.__main__ import main

    main(["grid", "--out", str(tmp_path), "--sources", "charts", "instructions", "--n", "2"])
    for source in ("charts", "instructions"):
        with Image.open(tmp_path / f"{source}.png") as im:
            assert im.width >= 600 and im.height > 100


def test_all_families_shard_in_parallel_and_leave_the_default_sources_unchanged(tmp_path) -> None:
    from components.data.corpus import generate_corpus
    from components.data.manifest import read_manifest
    from components.data.params import DataParams
    from components.data.shards import read_samples, split_shards

    default = {"scenes_caption": 4, "scenes_vqa": 4, "ocr": 4, "text": 4, "preference": 4}
    mixed = DataParams(shard_size=3, splits={"train": {**default,
                                                        **dict.fromkeys(EXTRA_SOURCES, 4)}})
    only = DataParams(shard_size=3, splits={"train": default})
    summary = generate_corpus(mixed, tmp_path / "all", workers=2)
    generate_corpus(only, tmp_path / "default", workers=1)
    assert summary["samples"] == 4 * len(SOURCES)
    rows = read_manifest(tmp_path / "all" / "manifests" / "train.jsonl")
    assert {r["source"] for r in rows} == set(SOURCES)
    assert all(r["n_images"] == r["n_image_placeholders"] and r["answer"] for r in rows)
    assert all(r["task"] == SOURCE_TASK[r["source"]] for r in rows)
    shards = split_shards(tmp_path / "all", "train")
    assert len(shards) == 2 * len(SOURCES)  # 4 samples at shard_size 3
    assert sum(1 for _ in read_samples(shards)) == 4 * len(SOURCES)
    for path in split_shards(tmp_path / "default", "train"):
        assert path.read_bytes() == (tmp_path / "all" / "train" / path.name).read_bytes()
