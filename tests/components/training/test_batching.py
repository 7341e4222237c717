"""Assistant-only labels, image-token safety and batch padding."""

from __future__ import annotations

import torch
from PIL import Image

from components.model.architectures.idefics3 import build_processor
from components.model.chat import IGNORE, ChatEncoder, assistant_mask, collate


def test_assistant_mask_on_hand_worked_ids():
    # ids: 9 = header (2 tokens: 7, 8), 5 = end of utterance
    ids = [1, 7, 8, 30, 31, 5, 2, 7, 8, 40, 5, 3, 7, 8, 50, 51, 52, 5, 4]
    expected = [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]
    assert assistant_mask(ids, [7, 8], 5) == [bool(x) for x in expected]


def _image(colour):
    return Image.new("RGB", (64, 64), colour)


TWO_IMAGE_CHAT = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "blue"}]},
    {"role": "user", "content": [{"type": "text", "text": "Same shape?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
]


def test_labels_cover_exactly_the_assistant_turns_of_a_two_image_three_turn_chat(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    enc = ChatEncoder(processor, max_length=512).encode(TWO_IMAGE_CHAT, [_image("red"), _image("blue")])
    assert enc.pixel_values.shape == (2, 3, 32, 32)
    labelled = [t for t in enc.labels if t != IGNORE]
    eou = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    expected = []
    for answer in ("red", "blue", "yes"):
        expected += tokenizer(answer, add_special_tokens=False).input_ids + [eou]
    assert labelled == expected
    # the labelled tokens sit right after each assistant header, in order
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    starts = [i for i in range(len(enc.input_ids)) if enc.input_ids[i:i + len(header)] == header]
    assert len(starts) == 3
    for s in starts:
        assert enc.labels[s + len(header) - 1] == IGNORE and enc.labels[s + len(header)] != IGNORE
    # image tokens are never labelled
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert all(lab == IGNORE for t, lab in zip(enc.input_ids, enc.labels, strict=True) if t == image_id)


def test_too_long_samples_are_dropped_not_truncated(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8, scale_factor=2)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    encoder = ChatEncoder(processor, max_length=20)  # 5 views x 4 image tokens alone exceed it
    assert encoder.encode(messages, [_image("red")]) is None


def test_collate_pads_text_only_samples_with_zero_images(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    encoder = ChatEncoder(processor, max_length=256)
    with_image = encoder.encode(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "red"}]}], [_image("red")])
    text_only = encoder.encode(
        [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "4"}]}], [])
    batch = collate([with_image, text_only], tokenizer.pad_token_id)
    assert batch["pixel_values"].shape == (2, 1, 3, 32, 32)
    assert torch.all(batch["pixel_values"][1] == 0)  # a padding image: skipped by the model
    n = len(text_only.input_ids)
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    left = collate([with_image, text_only], tokenizer.pad_token_id, padding_side="left")
    assert left["attention_mask"][1, -1] == 1 and left["attention_mask"][1, 0] == 0


def test_label_vector_matches_a_hand_worked_two_image_three_turn_chat_token_by_token(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    enc = ChatEncoder(processor, max_length=512).encode(TWO_IMAGE_CHAT, [_image("red"), _image("blue")])
    # Worked by hand: one 32 px view per image -> <fake><global-img> 4 x <image> <fake>;
    # labelled = each answer and its <end_of_utterance>; everything else (headers, the
    # newline after each answer, images, user turns) is ignored.
    image = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
    segments = [
        ("<|begin_of_text|><|im_start|>user\n" + image + "Colour?<end_of_utterance>\n<|im_start|>assistant\n", False),
        ("red<end_of_utterance>", True),
        ("\n<|im_start|>user\n" + image + "And this one?<end_of_utterance>\n<|im_start|>assistant\n", False),
        ("blue<end_of_utterance>", True),
        ("\n<|im_start|>user\nSame shape?<end_of_utterance>\n<|im_start|>assistant\n", False),
        ("yes<end_of_utterance>", True),
        ("\n", False),
    ]
    ids, labels = [], []
    for text, labelled in segments:
        part = tokenizer(text, add_special_tokens=False).input_ids
        ids += part
        labels += part if labelled else [IGNORE] * len(part)
    assert enc.input_ids == ids
    assert len(enc.labels) == len(labels)
    wrong = [(i, tokenizer.convert_ids_to_tokens(ids[i]), enc.labels[i], labels[i])
             for i in range(len(ids)) if enc.labels[i] != labels[i]]
    assert not wrong, f"label mismatches (position, token, got, expected): {wrong}"
