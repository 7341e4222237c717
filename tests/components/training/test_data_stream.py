"""Text-only data mixed in at a ratio, mixed batches through a real model, preference skipping."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from components.data.corpus import generate_samples
from components.data.sample import Sample
from components.data.shards import write_shard
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import IGNORE, ChatEncoder, collate
from components.recipe import parse_stage
from components.training.data_stream import (
    ChatBatches,
    MixedSamples,
    PreferenceBatches,
    SampleStream,
    sample_stream,
    turns_of_types,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for source in ("scenes_vqa", "text", "preference"):
        write_shard(generate_samples(source, 0, "train", 0, 30, image_size=32), root / "train" / f"{source}-0000.tar")
    return root


@pytest.fixture
def encoder(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return ChatEncoder(processor, max_length=256)


def test_text_only_samples_are_mixed_in_at_the_recipe_ratio(shards):
    mixed = sample_stream(shards, ["scenes_vqa", "text"], seed=0, text_ratio=0.25)
    assert isinstance(mixed, MixedSamples)
    drawn = list(itertools.islice(mixed, 2000))
    share = sum(s.record["source"] == "text" for s in drawn) / len(drawn)
    assert share == pytest.approx(0.25, abs=0.04)
    assert all(not s.images for s in drawn if s.record["source"] == "text")
    assert all(s.images for s in drawn if s.record["source"] != "text")
    # None keeps the natural mixture (one stream over both sources: 30 + 30 samples -> a half)
    natural = sample_stream(shards, ["scenes_vqa", "text"], seed=0)
    assert isinstance(natural, SampleStream)
    share = sum(s.record["source"] == "text" for s in itertools.islice(natural, 600)) / 600
    assert share == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="text-only source"):
        sample_stream(shards, ["scenes_vqa"], seed=0, text_ratio=0.5)


def test_recipe_text_ratio_and_packing_fields():
    base = dict(name="sft", kind="sft", longest_edge=32, sources=["scenes_vqa", "text"],
                unfreeze={"text": "full"})
    stage = parse_stage(base)
    assert stage.text_ratio is None and stage.packing is False
    assert parse_stage(dict(base, text_ratio=0.3, packing=True)).text_ratio == 0.3
    with pytest.raises(ValueError, match="text_ratio"):
        parse_stage({**base, "sources": ["scenes_vqa"], "text_ratio": 0.3})
    with pytest.raises(ValueError):
        parse_stage(dict(base, text_ratio=1.5))


def test_mixed_batch_forward_matches_each_sample_alone(backbones, tokenizer, encoder, shards):
    """A text-only sample carries no pixel tensors; batched with an image sample it gets an
    all-zero padding image that Idefics3 drops: its logits are those it has alone."""
    samples = sample_stream(shards, ["scenes_vqa", "text"], seed=0, text_ratio=0.5)
    batch = next(iter(ChatBatches(samples, encoder, batch_size=6)))
    assert "pixel_values" in batch
    items = []
    for s in itertools.islice(MixedSamples(SampleStream([shards / "train" / "text-0000.tar"], 0),
                                           SampleStream([shards / "train" / "scenes_vqa-0000.tar"], 0), 0.5, 1), 4):
        items.append(encoder.encode(s.record["messages"], s.images))
    kinds = [it.pixel_values is None for it in items]
    assert any(kinds) and not all(kinds), "need both text-only and image samples"
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    mixed = {k: v for k, v in collate(items, tokenizer.pad_token_id).items() if k != "labels"}
    with torch.no_grad():
        logits = model(**mixed).logits
        for row, it in enumerate(items):
            alone = {k: v for k, v in collate([it], tokenizer.pad_token_id).items() if k != "labels"}
            assert ("pixel_values" in alone) == (it.pixel_values is not None)
            n = len(it.input_ids)
            torch.testing.assert_close(logits[row, :n], model(**alone).logits[0], atol=1e-5, rtol=0)
        text_only = collate([it for it in items if it.pixel_values is None], tokenizer.pad_token_id)
        assert "pixel_values" not in text_only
        model(**{k: v for k, v in text_only.items() if k != "labels"})
        model(**{k: v for k, v in batch.items() if k != "labels"})


def _preference(key: str, chosen: str, rejected: str) -> Sample:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    return Sample(key, [Image.new("RGB", (32, 32), "red")],
                  {"messages": messages, "chosen": chosen, "rejected": rejected})


def test_preference_pairs_over_max_length_are_skipped_and_counted_never_cut(tokenizer, encoder):
    fits = _preference("fits", "a red circle", "a blue square")
    prompt_len = len(encoder.encode_with_answer(fits.record["messages"], fits.images, "").input_ids)
    longest_fit = max(len(encoder.encode_with_answer(fits.record["messages"], fits.images, a).input_ids)
                      for a in ("a red circle", "a blue square"))
    encoder.max_length = longest_fit  # the fitting pair uses every position
    too_long_rejected = _preference("long-rejected", "a red circle", "a red circle at the top left " * 3)
    too_long_chosen = _preference("long-chosen", "a red circle at the top left " * 3, "a blue square")
    assert prompt_len < encoder.max_length
    batches = PreferenceBatches([too_long_rejected, fits, too_long_chosen], encoder, batch_size=1)
    out = list(batches)
    assert batches.skipped == 2 and batches.dropped == 2
    assert len(out) == 1
    batch = out[0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    eou = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    for row, answer in enumerate(("a red circle", "a blue square")):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        assert int((ids == image_id).sum()) == 4  # every image token kept
        labelled = labels[labels != IGNORE].tolist()
        assert labelled == tokenizer(answer, add_special_tokens=False).input_ids + [eou]  # whole answer


def test_split_turns_gives_each_answer_its_own_sample_with_the_image(encoder, shards):
    sample = next(s for s in SampleStream(sorted((shards / "train").glob("scenes_vqa-*.tar")), seed=0)
                  if len(s.record["messages"]) >= 6)
    whole = ChatBatches([sample], encoder, batch_size=1).encode(sample)
    split = ChatBatches([sample], encoder, batch_size=1, split_turns=True).encode(sample)
    messages = sample.record["messages"]
    assert len(whole) == 1 and len(split) == len(messages) // 2
    image_tokens = whole[0].input_ids.count(encoder.image_token_id)
    for turn, enc in enumerate(split):
        assert enc.input_ids.count(encoder.image_token_id) == image_tokens  # every turn sees the image
        answer = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE]
        expected = encoder.tokenizer(messages[2 * turn + 1]["content"][0]["text"], add_special_tokens=False).input_ids
        assert answer[: len(expected)] == expected  # the label is this turn's answer, and no other
        assert len(answer) <= len(expected) + 2  # plus the end-of-utterance marker
    batches = ChatBatches(SampleStream(sorted((shards / "train").glob("scenes_vqa-*.tar")), seed=0), encoder,
                          batch_size=4, split_turns=True)
    assert {len(b["input_ids"]) for b in itertools.islice(batches, 10)} == {4}  # turns spill over, never overshoot
    base = dict(name="p", kind="pretrain", longest_edge=32, sources=["scenes_vqa"], unfreeze={"text": "full"})
    assert not parse_stage(base).split_turns and parse_stage(dict(base, split_turns=True)).split_turns


def test_question_types_keep_only_the_turns_of_those_types(encoder, shards):
    stream = SampleStream(sorted((shards / "train").glob("scenes_vqa-*.tar")), seed=0)
    sample = next(s for s in stream if {"colour", "count"} <= set(s.record["qtypes"]))
    qtypes, messages = sample.record["qtypes"], sample.record["messages"]
    kept = turns_of_types(sample.record, {"colour"})
    assert [turn[1] for turn in kept] == [messages[2 * i + 1] for i, q in enumerate(qtypes) if q == "colour"]
    assert turns_of_types({"messages": messages}, {"colour"}) == []  # untyped turns are never selected
    batches = ChatBatches([sample], encoder, batch_size=1, split_turns=True, question_types={"count"})
    rows = batches.encode(sample)
    assert len(rows) == qtypes.count("count") and batches.skipped == 0
    assert ChatBatches([sample], encoder, 1, split_turns=True, question_types={"ocr"}).encode(sample) == []
    base = dict(name="p", kind="pretrain", longest_edge=32, sources=["scenes_vqa"], unfreeze={"text": "full"})
    with pytest.raises(ValueError, match="split_turns"):
        parse_stage(dict(base, question_types=["colour"]))
