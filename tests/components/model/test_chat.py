"""Labels of an ingested interleaved document: every text token of the document is a target,
no image placeholder token ever is, in every image layout (tiles, flat, cross)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from components.data.ingest.examples import png
from components.data.ingest.run import ingest
from components.data.sample import Sample
from components.data.shards import read_samples
from components.model.architectures.idefics import idefics_processor
from components.model.architectures.idefics2 import idefics2_processor
from components.model.architectures.idefics3 import build_processor
from components.model.architectures.llava import llava_processor
from components.model.chat import IGNORE, ChatEncoder, image_positions

TEXTS = ["Our trip began here.", "Then we saw this.", "That was all."]
# the placeholder names, spelled out here rather than taken from chat.py
PLACEHOLDERS = ["<image>", "<fake_token_around_image>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> Sample:
    """An OBELICS document (three images between texts) through `vlmforge ingest`."""
    root = tmp_path_factory.mktemp("obelics")
    row = {"id": "doc", "texts": [TEXTS[0], None, TEXTS[1], None, None, TEXTS[2]],
           "images": [None, "a.png", None, "b.png", "c.png", None]}
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (root / name).write_bytes(png(i))
    (root / "docs.jsonl").write_text(json.dumps(row) + "\n")
    summary = ingest("obelics", root / "docs.jsonl", root / "out", root, validate=False)
    [sample] = read_samples(summary.shards)
    assert [m["role"] for m in sample.record["messages"]] == ["assistant"]
    assert len(sample.images) == 3
    return sample


def _stub(**vision) -> SimpleNamespace:
    """Just the config fields the architectures' processor builders read."""
    return SimpleNamespace(config=SimpleNamespace(
        vision_config=SimpleNamespace(model_type="siglip_vision_model", **vision),
        vision_feature_select_strategy="full",
        perceiver_config=SimpleNamespace(resampler_n_latents=4)))


PROCESSORS = {
    # Idefics3 at 64 px: 2x2 tiles with <row_i_col_j> and line breaks, plus the global view
    "idefics3-tiles": ("tiles", lambda tok: build_processor(
        tok, tile_size=32, longest_edge=64, patch_size=8, scale_factor=2)),
    "idefics3-one-view": ("tiles", lambda tok: build_processor(
        tok, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)),
    "idefics2-crops": ("tiles", lambda tok: idefics2_processor(_stub(image_size=32), tok, 64)),
    "llava": ("flat", lambda tok: llava_processor(_stub(image_size=32, patch_size=8), tok, 32)),
    "idefics": ("cross", lambda tok: idefics_processor(_stub(image_size=32), tok, 32)),
}
# Idefics2's processor puts a space between an image and the word after it
SPACE_AFTER_IMAGE = {"idefics2-crops"}


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_document_labels_cover_its_text_and_no_image_token(name: str, tokenizer, document) -> None:
    layout, build = PROCESSORS[name]
    encoder = ChatEncoder(build(tokenizer), max_length=4096)
    enc = encoder.encode(document.record["messages"], document.images)
    assert enc is not None and enc.layout == layout
    vocab = tokenizer.get_vocab()
    placeholder_ids = {vocab[t] for t in PLACEHOLDERS if t in vocab}
    in_input = placeholder_ids & set(enc.input_ids)
    assert vocab["<image>"] in in_input  # the images are in the sequence...
    assert not in_input & set(enc.labels)  # ...and never a label
    assert all(lab in (IGNORE, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    # the labelled tokens are exactly the document's texts and its end of utterance
    eou = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    lead = " " if name in SPACE_AFTER_IMAGE else ""
    texts = [TEXTS[0]] + [lead + text for text in TEXTS[1:]]  # the 2nd and 3rd follow images
    expected = [t for text in texts for t in tokenizer(text, add_special_tokens=False).input_ids]
    assert [t for t in enc.labels if t != IGNORE] == expected + [eou]


def test_tile_row_breaks_inside_an_image_are_not_labels(tokenizer, document) -> None:
    processor = PROCESSORS["idefics3-tiles"][1](tokenizer)
    enc = ChatEncoder(processor, max_length=4096).encode(document.record["messages"],
                                                         document.images)
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    assert set(newline) <= set(enc.input_ids)  # Idefics3 breaks tile rows with "\n"
    assert not set(newline) & {t for t in enc.labels if t != IGNORE}


def test_image_positions_cover_blank_runs_between_image_tokens_only() -> None:
    image, blank, word = 5, 9, 7
    ids = [word, blank, image, image, blank, blank, image, blank, word, image, word]
    got = image_positions(ids, frozenset({image}), lambda t: t == blank)
    assert got == [False, False, True, True, True, True, True, False, False, True, False]
