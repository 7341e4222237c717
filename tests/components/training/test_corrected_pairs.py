"""Preference pairs from the model's own captions: the correction rule, and the stream on a
real model taught one fixed caption, so its captions hallucinate on most scenes."""

from __future__ import annotations

import torch

from components.data.corpus import generate_samples
from components.evaluation.caption_hallucination import hallucinated_mentions
from components.evaluation.generate import generate_answers
from components.model.architectures.idefics3 import assemble_idefics3, build_processor
from components.model.chat import ChatEncoder, collate
from components.training import corrected_pairs
from components.training.corrected_pairs import CorrectedCaptionPairs, corrected_caption

FIXED = "a red triangle at the top left and a blue triangle at the top right."
SCENE = [{"colour": "red", "shape": "circle", "quadrant": "top right"},
         {"colour": "blue", "shape": "square", "quadrant": "bottom left"}]


def test_a_caption_is_corrected_object_by_object_by_colour():
    assert corrected_caption("a red square at the top left and a green circle at the bottom right.",
                             SCENE) == "a red circle at the top right."
    assert corrected_caption("a blue triangle at the top left and a red square at the top right.",
                             SCENE) == "a red circle at the top right and a blue square at the bottom left."
    assert corrected_caption("a red circle, a red square and a red triangle.", SCENE) == \
        "a red circle at the top right."  # each scene object is named once
    assert corrected_caption("a green circle at the top left.", SCENE) is None  # nothing to keep


def test_hallucinated_captions_of_the_reference_become_rejected(backbones, tokenizer, monkeypatch):
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2)
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    encoder = ChatEncoder(processor, 256)
    samples = list(generate_samples("preference", 0, "train", 0, 24, image_size=32))
    batch = collate([encoder.encode_with_answer(s.record["messages"], s.images, FIXED) for s in samples[:4]],
                    tokenizer.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # the reference learns to say FIXED whatever the image
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    prompted = []

    def counted(model, encoder, prompts, **kw):
        prompted.extend(prompts)
        return generate_answers(model, encoder, prompts, **kw)

    monkeypatch.setattr(corrected_pairs, "generate_answers", counted)
    pairs = CorrectedCaptionPairs(samples + samples, model, encoder, chunk=8, max_new_tokens=48)
    out = list(pairs)
    assert [s.record for s in out[len(samples):]] == [s.record for s in out[: len(samples)]]
    out = out[: len(samples)]  # the second epoch repeats the first, without generating again
    assert [s.key for s in out] == [s.key for s in samples]
    captions = [s for s in samples if s.record["hallucination"] in ("object", "attribute")]
    assert len(prompted) == len(captions) > 0 and pairs.judged == 2 * len(captions)
    rewritten = [s for s in out if s.record.get("rejected_from") == "model"]
    assert 2 * len(rewritten) == pairs.replaced > 0
    for s in rewritten:
        objects = s.record["objects"]
        assert s.record["rejected"] == FIXED and hallucinated_mentions(FIXED, objects)
        assert not hallucinated_mentions(s.record["chosen"], objects)
        assert s.record["answers"] == [s.record["chosen"]]
    untouched = {s.key for s in samples if s.record["hallucination"] in ("existence", "count")}
    assert all(s.record == next(x for x in samples if x.key == s.key).record for s in out if s.key in untouched)
