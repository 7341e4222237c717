"""Processed images kept per content: the same encodings as without, each image processed once."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from components.model import image_memo
from components.model.architectures import ARCHITECTURES
from components.model.chat import ChatEncoder
from tests.components.model.helpers import build, colour_chats


@pytest.fixture(autouse=True)
def _empty_memo():
    image_memo.clear()
    yield
    image_memo.clear()


def _same(a, b) -> bool:
    return (a.input_ids == b.input_ids and a.labels == b.labels
            and all(torch.equal(x, y) if x is not None else y is None
                    for x, y in ((a.pixel_values, b.pixel_values),
                                 (a.pixel_attention_mask, b.pixel_attention_mask))))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_encodings_equal_those_without_the_memo(arch, tokenizer, tmp_path, monkeypatch):
    *_, processor = build(arch, tokenizer, tmp_path)
    encoder = ChatEncoder(processor, max_length=256)
    chats = colour_chats(4)  # two distinct images, each asked about twice
    remembered = [encoder.encode(m, imgs) for m, imgs in chats]
    kept = image_memo._bytes
    assert kept > 0
    assert [_same(x, encoder.encode(m, imgs)) for x, (m, imgs) in zip(remembered, chats, strict=True)] == [True] * 4
    assert image_memo._bytes == kept  # served from the memo
    monkeypatch.setenv(image_memo.ENV, "0")
    fresh = [encoder.encode(m, imgs) for m, imgs in chats]
    assert all(_same(a, b) for a, b in zip(remembered, fresh, strict=True))


def test_an_image_seen_before_is_not_processed_again(tokenizer, tmp_path):
    *_, processor = build("idefics3", tokenizer, tmp_path)
    calls = []
    inner = processor.image_processor.__class__.__call__

    def counting(self, images, **kwargs):
        calls.append(len(images))
        return inner(self, images, **kwargs)

    encoder = ChatEncoder(processor, max_length=256)
    messages, _ = colour_chats(1)[0]
    red, also_red, blue = (Image.new("RGB", (32, 32), c) for c in ("red", "red", "blue"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(processor.image_processor), "__call__", counting)
        for images in ([red], [also_red], [blue], [red]):  # equal pixels: the same image
            encoder.encode(messages, images)
    assert len(calls) == 2
    encoder._processing.image_processor.inner.size = {"longest_edge": 64}  # other settings
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(processor.image_processor), "__call__", counting)
        encoder.encode(messages, [red])
    assert len(calls) == 3
    assert encoder.processor is processor and not isinstance(processor.image_processor, image_memo.ImageMemo)
    assert image_memo.with_image_memo(encoder._processing) is encoder._processing
