"""Few-shot prompts: k shots (image + question + answer) from the support split before the
query, drawn deterministically, the query's answer never in the prompt; and a tiny model
answers k-shot prompts through the batched generator."""

from __future__ import annotations

import pytest
from PIL import Image

from components.data.sample import (
    Sample,
    assistant_turn,
    image_placeholders,
    message_text,
    user_turn,
)
from components.data.synthetic.scenes import generate_caption, generate_vqa
from components.evaluation.fewshot import FewShotPrompter, fewshot_prompts, shot_turns

SECRET = "zanzibar"  # the query's answer: appears nowhere in the support split


@pytest.fixture(scope="module")
def support():
    return ([generate_vqa(0, i, "val") for i in range(10)]
            + [generate_caption(0, i, "val") for i in range(6)])


def _query(key="scenes_vqa-test-0000001", task="vqa"):
    image = Image.new("RGB", (64, 64), "white")
    return Sample(key, [image], {"task": task, "messages": [
        user_turn("What colour is the circle?", 1), assistant_turn(SECRET)], "answers": [SECRET]})


@pytest.mark.parametrize("k", [0, 1, 3])
def test_prompt_has_k_images_k_answers_and_no_test_answer(support, k):
    query = _query()
    messages, images = FewShotPrompter(support, k).prompt(query)
    answers = [m for m in messages if m["role"] == "assistant"]
    assert len(answers) == k
    assert image_placeholders(messages) == len(images) == k + 1  # k shots + the query's image
    assert images[-1] is query.images[0]
    assert messages[-1] == query.record["messages"][0]  # ends with the query's question
    assert all(SECRET not in message_text(m) for m in messages)
    shots = FewShotPrompter(support, k).shots(query)
    for i, shot in enumerate(shots):
        user, answer = shot_turns(shot)
        assert messages[2 * i : 2 * i + 2] == [user, answer]
        assert images[i] is shot.images[0]
        assert shot.record["task"] == "vqa"  # shots of the query's task


def test_draw_is_deterministic_and_depends_on_seed_and_query(support):
    q1, q2 = _query("scenes_vqa-test-0000001"), _query("scenes_vqa-test-0000002")
    keys = [s.key for s in FewShotPrompter(support, 3).shots(q1)]
    assert keys == [s.key for s in FewShotPrompter(support[::-1], 3).shots(q1)]  # order-free
    draws = {tuple(s.key for s in FewShotPrompter(support, 3, seed=seed).shots(q))
             for seed in range(4) for q in (q1, q2)}
    assert len(draws) > 1


def test_caption_queries_get_caption_shots_and_same_task_can_be_off(support):
    query = _query("scenes_caption-test-0000003", task="caption")
    assert {s.record["task"] for s in FewShotPrompter(support, 4).shots(query)} == {"caption"}
    with pytest.raises(ValueError, match="7 shots asked but the support split has 6 'caption'"):
        FewShotPrompter(support, 7).shots(query)
    assert len(FewShotPrompter(support, 7, same_task=False).shots(query)) == 7


def test_query_key_is_never_its_own_shot(support):
    query = support[0]
    for seed in range(5):
        assert query.key not in [s.key for s in FewShotPrompter(support, 9, seed=seed).shots(query)]


def test_a_broken_support_record_is_named():
    bad = Sample("broken-val-1", [Image.new("RGB", (8, 8))],
                 {"task": "vqa", "messages": [user_turn("Q?", 0), assistant_turn("a")]})
    with pytest.raises(ValueError, match="support record 'broken-val-1': its first turn shows 0 "
                                         "images but the sample has 1"):
        FewShotPrompter([bad], 1).prompt(_query())
    with pytest.raises(ValueError, match="k must be >= 0"):
        FewShotPrompter([bad], -1)


def test_tiny_model_answers_k_shot_prompts(backbones, tokenizer, support):
    from components.evaluation.generate import generate_answers
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    encoder = ChatEncoder(processor, 512)
    queries = [generate_vqa(0, i, "test") for i in range(3)]
    prompts = fewshot_prompts(queries, support, 2)
    assert [len(imgs) for _, imgs in prompts] == [3, 3, 3]
    batched = generate_answers(model, encoder, prompts, max_new_tokens=3, batch_size=3)
    alone = [generate_answers(model, encoder, [p], max_new_tokens=3)[0] for p in prompts]
    assert len(batched) == 3 and all(isinstance(a, str) for a in batched)
    assert alone == [generate_answers(model, encoder, [p], max_new_tokens=3)[0] for p in prompts]
