"""Packing: conversations share a row but not attention; logits equal each conversation alone."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from components.data.sample import Sample
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import IGNORE, ChatEncoder, collate
from components.training.data_stream import ChatBatches
from components.training.loop import lm_objective
from components.training.packing import (
    RowPacker,
    block_causal_mask,
    collate_packed,
    first_fit,
    packed_lm_objective,
    packed_model_inputs,
    padding_fraction,
)


def _chat(question: str, answer: str, images: int = 0) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


@pytest.fixture
def encoder(tokenizer):
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return ChatEncoder(processor, max_length=128)


@pytest.fixture
def conversations(encoder):
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    return [
        encoder.encode(_chat("What colour is the circle?", "red", 1), [red]),
        encoder.encode(_chat("What is 2 + 2?", "4"), []),  # text-only: no pixel tensors
        encoder.encode(_chat("Describe the image.", "a blue square", 2) + _chat("Is there a red circle?", "no"),
                       [blue, red]),
        encoder.encode(_chat("Reverse the word red.", "der"), []),
    ]


def test_first_fit_and_row_packer_on_hand_worked_lengths():
    assert first_fit([5, 4, 3, 2, 6], 8) == [[0, 2], [1, 3], [4]]
    packer = RowPacker(8, rows=2)
    assert [packer.add(n) for n in (5, 4, 3, 2)] == [True] * 4
    assert packer.add(6) is False and packer.groups == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="exceeds"):
        RowPacker(8).add(9)


def test_block_causal_mask_keeps_attention_inside_each_conversation():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])  # conversations of 3 and 2 tokens, then 1 padding token
    mask = block_causal_mask(positions)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0, 0],
                    [1, 1, 0, 0, 0, 0],
                    [1, 1, 1, 0, 0, 0],
                    [0, 0, 0, 1, 0, 0],
                    [0, 0, 0, 1, 1, 0],
                    [0, 0, 0, 0, 0, 1]]
    additive = block_causal_mask(positions, additive_dtype=torch.float32)[0, 0]
    assert additive[4, 3] == 0 and additive[4, 2] == torch.finfo(torch.float32).min


def test_collate_packed_restarts_positions_and_keeps_images_in_order(conversations, tokenizer):
    a, b, c, d = conversations
    batch = collate_packed([[a, b], [c, d]], tokenizer.pad_token_id)
    na, nb, nc, nd = (len(x.input_ids) for x in conversations)
    longest = max(na + nb, nc + nd)
    assert batch["input_ids"].shape == (2, longest)
    assert batch["input_ids"][0, :na].tolist() == a.input_ids and batch["labels"][0, na:na + nb].tolist() == b.labels
    assert batch["position_ids"][0, :na + nb].tolist() == list(range(na)) + list(range(nb))
    assert batch["position_ids"][1, :nc + nd].tolist() == list(range(nc)) + list(range(nd))
    assert batch["attention_mask"].sum().item() == na + nb + nc + nd
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    # row 0 holds one image, row 1 two (in order); a padding image is all zero
    assert batch["pixel_values"].shape == (2, 2, 3, 32, 32)
    assert torch.equal(batch["pixel_values"][0, 0], a.pixel_values[0])
    assert torch.all(batch["pixel_values"][0, 1] == 0)
    assert torch.equal(batch["pixel_values"][1], c.pixel_values)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_conversation_alone(backbones, tokenizer, conversations, attn):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    model.set_attn_implementation(attn)
    rows = [[conversations[0], conversations[1]], [conversations[2], conversations[3]]]
    batch = collate_packed(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(**packed_model_inputs(model, batch)).logits
        for r, row in enumerate(rows):
            at = 0
            for conv in row:
                alone_batch = {k: v for k, v in collate([conv], tokenizer.pad_token_id).items() if k != "labels"}
                assert ("pixel_values" in alone_batch) == (conv.pixel_values is not None)
                alone = model(**alone_batch).logits[0]
                n = len(conv.input_ids)
                torch.testing.assert_close(packed[r, at:at + n], alone, atol=1e-5, rtol=0)
                at += n
        # without the block mask the second conversation would see the first: logits differ
        leaky = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        n0 = len(rows[0][0].input_ids)
        assert not torch.allclose(leaky[0, n0:n0 + 5], packed[0, n0:n0 + 5], atol=1e-4)


def test_packed_loss_equals_the_unpacked_loss(backbones, tokenizer, conversations):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    packed = collate_packed([[conversations[0], conversations[1]], [conversations[2], conversations[3]]],
                            tokenizer.pad_token_id)
    unpacked = collate(conversations, tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(packed_lm_objective(model, packed)[0], lm_objective(model, unpacked)[0],
                                   atol=1e-5, rtol=1e-5)


def test_chat_batches_pack_whole_conversations_into_rows(encoder, tokenizer):
    samples = [Sample(f"k{i}", [], {"messages": _chat(f"What comes after {i}?", str(i + 1))}) for i in range(40)]
    encoder.max_length = 64
    lengths = [len(encoder.encode(s.record["messages"], []).input_ids) for s in samples]
    batches = list(ChatBatches(samples, encoder, batch_size=2, packing=True))
    assert batches, "no packed batch"
    per_row = sum(lengths) // len(lengths)
    for batch in batches:
        assert batch["input_ids"].shape[0] == 2 and batch["input_ids"].shape[1] <= 64
        starts = (batch["position_ids"] == 0) & (batch["attention_mask"] == 1)
        assert (starts.sum(-1) >= 64 // per_row - 1).all()  # several conversations per row
    # every conversation appears whole, in arrival order
    first = batches[0]
    row0 = first["input_ids"][0][first["attention_mask"][0] == 1].tolist()
    assert row0[:lengths[0]] == encoder.encode(samples[0].record["messages"], []).input_ids


def test_padding_fraction_on_hand_worked_lengths():
    # no packing: batches [10, 4] -> 20 slots, [6, 6] -> 12 slots; 26 real tokens of 32
    assert padding_fraction([10, 4, 6, 6], 2, 16, packing=False) == pytest.approx(1 - 26 / 32)
    # packing, 2 rows of 16: rows [10, 4] and [6, 6] -> longest 14, 28 slots
    assert padding_fraction([10, 4, 6, 6], 2, 16, packing=True) == pytest.approx(1 - 26 / 28)


def test_attention_implementation_is_read_through_a_ddp_style_wrapper(backbones, tokenizer):
    from components.training.packing import attention_implementation

    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    model.set_attn_implementation("eager")

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel exposes: .module, no .config
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert attention_implementation(Wrapper(model)) == "eager"
    batch = {"position_ids": torch.tensor([[0, 1, 0]]), "attention_mask": torch.ones(1, 3)}
    mask = packed_model_inputs(Wrapper(model), batch)["attention_mask"]
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 3, 3)
