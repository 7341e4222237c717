"""Pre-flight checks: a clean stage passes them all; cut image tokens, a packed batch whose
attention crosses samples and a label on an image token each fail naming the sample."""

from __future__ import annotations

import pytest

from components.data.corpus import generate_samples
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import IGNORE, ChatEncoder
from components.training.data_stream import ChatBatches
from components.training.preflight import (
    PreflightError,
    check_packing,
    label_share,
    run_preflight,
)


@pytest.fixture
def model(backbones, tokenizer):
    return assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()


def _encoder(tokenizer, scale_factor: int = 2) -> ChatEncoder:
    return ChatEncoder(build_processor(tokenizer, tile_size=32, longest_edge=64, patch_size=8,
                                       scale_factor=scale_factor), max_length=256)


def _samples():
    return (list(generate_samples("scenes_vqa", 0, "train", 0, 4, image_size=64))
            + list(generate_samples("text", 0, "train", 0, 2, image_size=64)))


def test_a_clean_stage_passes_every_check(model, tokenizer):
    encoder = _encoder(tokenizer)
    batches = ChatBatches([], encoder, batch_size=2, packing=True)
    report = run_preflight(model, encoder, _samples(), batches.encode, packing=True)
    assert report.samples == 6 and report.rows == 6
    assert report.checks == ["image tokens = image features", "labels on assistant tokens only",
                             "packed loss = unpacked loss"]
    assert report.label_share["assistant"] == 1.0 and report.label_share["image"] == 0.0
    assert report.metrics()["preflight_label_share_assistant"] == 1.0


def test_cut_image_tokens_fail_with_the_sample_id(model, tokenizer):
    encoder = _encoder(tokenizer, scale_factor=4)  # a processor announcing 4x fewer image tokens
    batches = ChatBatches([], encoder, batch_size=2)
    with pytest.raises(PreflightError, match=r"'image tokens = image features' failed on sample "
                                             r"'scenes_vqa-train-0000000'"):
        run_preflight(model, encoder, _samples(), batches.encode, packing=False)


def test_packed_attention_across_samples_fails_with_the_sample_id(model, tokenizer):
    encoder = _encoder(tokenizer)
    rows = [(s.key, it) for s in _samples() for it in ChatBatches([], encoder, 2).encode(s)]

    def leaky(model, batch):  # the plain 2-D mask: each sample sees the ones packed before it
        return dict(batch)

    with pytest.raises(PreflightError, match="'packed loss = unpacked loss' failed on sample"):
        check_packing(model, encoder, rows, packed_inputs=leaky)


def test_a_label_on_an_image_token_fails_with_the_sample_id(tokenizer):
    encoder = _encoder(tokenizer)
    sample = _samples()[0]
    (item,) = ChatBatches([], encoder, 2).encode(sample)
    image_at = item.input_ids.index(encoder.image_token_id)
    item.labels[image_at] = item.input_ids[image_at]
    with pytest.raises(PreflightError, match=rf"failed on sample '{sample.key}': labels on \{{'image': 1\}}"):
        label_share(encoder, [(sample.key, item)])
    item.labels = [IGNORE] * len(item.labels)
    item.labels[1] = item.input_ids[1]  # a user-turn token
    with pytest.raises(PreflightError, match="labels on"):
        label_share(encoder, [(sample.key, item)])


def test_a_flamingo_stage_with_text_only_samples_passes(tokenizer, tmp_path):
    from tests.components.model.helpers import build

    _, _, model, processor = build("idefics", tokenizer, tmp_path)
    encoder = ChatEncoder(processor, max_length=256)  # a text-only row brings an all-zero image
    batches = ChatBatches([], encoder, batch_size=2)
    report = run_preflight(model.eval(), encoder, _samples(), batches.encode, packing=False)
    assert report.rows == 6 and report.checks[0] == "image tokens = image features"
