"""In-model multiple choice on a tiny random Idefics3: the chosen letter is the argmax of the
letter log-probabilities, computed here independently, one unpadded item at a time."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from components.evaluation.mcq import (
    INSTRUCTION,
    choose_options,
    letter_token_ids,
    mcq_messages,
)
from components.evaluation.official_formats import MCQItem
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import ChatEncoder


@pytest.fixture
def model_and_encoder(backbones, tokenizer):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return model, ChatEncoder(processor, max_length=512)


@pytest.fixture
def items(tmp_path):
    paths = []
    for colour in ("red", "blue"):
        paths.append(tmp_path / f"{colour}.png")
        Image.new("RGB", (48, 40), colour).save(paths[-1])
    return [
        MCQItem("q0", "What colour is the circle?", ("red", "blue", "green"), 0, str(paths[0])),
        MCQItem("q1", "Is there a square?", ("yes", "no"), 1),
        MCQItem(2, "Describe the image.", ("a red circle", "a blue square", "nothing", "a dog"),
                3, str(paths[1])),
        MCQItem("q3", "What is 2 + 2?", ("3", "4", "5", "6", "22"), 1),
        MCQItem("q4", "Colour?", ("blue", "red"), 0, str(paths[1])),
    ]


def _independent_letter_logprobs(model, encoder, item):
    """Log-probabilities of the item's letters after its own unpadded prompt."""
    images = [Image.open(item.image).convert("RGB")] if item.image else []
    text = encoder.processor.apply_chat_template(mcq_messages(item), tokenize=False,
                                                  add_generation_prompt=True)
    if images:
        inputs = dict(encoder.processor(text=[text], images=[images], return_tensors="pt"))
    else:
        inputs = {"input_ids": torch.tensor([encoder.tokenizer(text, add_special_tokens=False).input_ids])}
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    ids = letter_token_ids(encoder.tokenizer, len(item.options))
    return logits.log_softmax(-1)[ids]


def test_prompt_lists_lettered_options_and_the_instruction(items):
    (message,) = mcq_messages(items[0])
    assert message["content"][0] == {"type": "image"}
    assert message["content"][1]["text"] == (
        "What colour is the circle?\nA. red\nB. blue\nC. green\n" + INSTRUCTION)
    assert [c["type"] for c in mcq_messages(items[1])[0]["content"]] == ["text"]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_chosen_letter_is_the_argmax_of_the_letter_logprobs(model_and_encoder, items, batch_size):
    model, encoder = model_and_encoder
    scores = choose_options(model, encoder, items, batch_size=batch_size)
    assert [s.id for s in scores] == [it.id for it in items]
    for item, s in zip(items, scores, strict=True):
        assert list(s.logprobs) == [chr(ord("A") + i) for i in range(len(item.options))]
        expected = _independent_letter_logprobs(model, encoder, item)
        got = torch.tensor(list(s.logprobs.values()))
        assert torch.allclose(got, expected, atol=1e-4), (item.id, got, expected)
        assert s.letter == chr(ord("A") + int(expected.argmax()))
        assert all(lp < 0 for lp in s.logprobs.values())


def test_letters_must_be_single_tokens(tokenizer):
    assert len(set(letter_token_ids(tokenizer, 26))) == 26

    class Splitting:
        def __call__(self, text, add_special_tokens=False):
            class Out:
                input_ids = [1, 2]
            return Out()

    with pytest.raises(ValueError, match="'A' is 2 tokens"):
        letter_token_ids(Splitting(), 2)


def test_unreadable_image_names_the_item(model_and_encoder, tmp_path):
    model, encoder = model_and_encoder
    item = MCQItem("broken", "Q?", ("a", "b"), 0, str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="item 'broken': cannot open image"):
        choose_options(model, encoder, [item])
