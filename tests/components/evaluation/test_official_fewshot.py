"""Few-shot prompts on the official VQA and caption suites: k shots from a support file pair,
drawn per query as the synthetic suites draw them, never the query's own item; the prompts
the suites generate from; errors naming the file and the rule; one tiny-model run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from components.data.sample import Sample, image_placeholders, message_text, user_turn
from components.evaluation.fewshot import FewShotPrompter, draw_keys
from components.evaluation.official_fewshot import caption_support, vqa_support
from components.evaluation.official_formats import FormatError
from components.evaluation.suites import SuiteSpec

COLOURS = ["red", "blue", "green", "yellow", "white", "black"]


def _vqa_files(folder, qids, prefix):
    """VQAv2 questions + annotations over images 1..n (answers say the image's colour)."""
    anns = {"annotations": [
        {"question_id": q, "image_id": i, "question_type": "what color", "answer_type": "other",
         "multiple_choice_answer": f"{prefix}{COLOURS[i - 1]}",
         "answers": [{"answer": f"{prefix}{COLOURS[i - 1]}", "answer_id": j + 1} for j in range(3)]}
        for i, q in enumerate(qids, start=1)]}
    questions = {"questions": [{"question_id": q, "image_id": i, "question": f"Colour {q}?"}
                               for i, q in enumerate(qids, start=1)]}
    (folder / f"{prefix}anns.json").write_text(json.dumps(anns))
    (folder / f"{prefix}questions.json").write_text(json.dumps(questions))
    return folder / f"{prefix}anns.json", folder / f"{prefix}questions.json"


@pytest.fixture
def files(tmp_path):
    """Query files (val: 3 questions) and support files (train: 5 questions), VQAv2 and COCO
    captions, each over its own image folder."""
    for split, n in (("val", 3), ("train", 5)):
        (tmp_path / split).mkdir()
        for i in range(1, n + 1):
            Image.new("RGB", (32, 32), COLOURS[i - 1]).save(tmp_path / split / f"{i}.jpg")
    val = _vqa_files(tmp_path, [101, 102, 103], "val_")
    train = _vqa_files(tmp_path, [201, 202, 203, 204, 205], "train_")
    for split, n in (("val", 3), ("train", 5)):
        captions = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, n + 1)],
                    "annotations": [{"image_id": i, "caption": f"{split} caption {i} {c}"}
                                    for i in range(1, n + 1) for c in ("a", "b")]}
        (tmp_path / f"{split}_captions.json").write_text(json.dumps(captions))
    return tmp_path, val, train


def test_draw_keys_is_the_prompters_draw():
    keys = sorted(f"k{i:03d}" for i in range(40))
    samples = [Sample(k, [], {"task": "vqa", "messages": []}) for k in keys]
    for query in ("k007", "k039", "zzz", "a"):  # in the pool (left out) or not
        for k, seed in ((1, 0), (3, 0), (3, 5), (39, 1)):
            shots = FewShotPrompter(samples, k, seed=seed).shots(Sample(query, [], {"task": "vqa"}))
            assert draw_keys(keys, k, query, seed=seed) == [s.key for s in shots]
            assert query not in draw_keys(keys, k, query, seed=seed)
    with pytest.raises(ValueError, match="3 shots asked but the support set has 2"):
        draw_keys(["a", "b", "c"], 3, "a")


def test_vqa_shots_come_from_the_support_pair_deterministically(files):
    root, _, (anns, questions) = files
    support = vqa_support(anns, questions, root / "train", "{image_id}.jpg", 2, seed=0)
    shots = support.draw(101)
    assert len(shots) == 2 and {s.key for s in shots} <= {"201", "202", "203", "204", "205"}
    assert shots == vqa_support(anns, questions, root / "train", "{image_id}.jpg", 2).draw(101)
    for shot in shots:
        i = int(shot.key) - 200
        assert shot.text == f"Colour {shot.key}?" and shot.answer == f"train_{COLOURS[i - 1]}"
        assert shot.image == root / "train" / f"{i}.jpg"
    draws = {tuple(s.key for s in vqa_support(anns, questions, root / "train", "{image_id}.jpg",
                                             2, seed=seed).draw(q))
             for seed in range(3) for q in (101, 102, 103)}
    assert len(draws) > 1
    query = user_turn("Colour 101?", 1)
    messages, images = support.prompt(101, query)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 + ["user"]
    assert messages[-1] is query and images == [s.image for s in shots]
    assert image_placeholders(messages) == len(images) + 1


def test_the_querys_own_item_is_never_a_shot(files):
    """Support = the query file itself: each query is left out of its own shots."""
    root, (anns, questions), _ = files
    support = vqa_support(anns, questions, root / "val", "{image_id}.jpg", 2)
    for qid in (101, 102, 103):
        assert {s.key for s in support.draw(qid)} == {"101", "102", "103"} - {str(qid)}
    captions = caption_support(root / "val_captions.json", root / "val", "{image_id}.jpg", 2)
    for image_id in (1, 2, 3):
        shots = captions.draw(image_id)
        assert {s.key for s in shots} == {"1", "2", "3"} - {str(image_id)}
        assert all(s.answer == f"val caption {s.key} a" for s in shots)  # the first reference
    with pytest.raises(FormatError, match="val_anns.json: query '101': 3 shots asked but the "
                                          "support set has 2 items"):
        vqa_support(anns, questions, root / "val", "{image_id}.jpg", 3).draw(101)


def test_support_errors_name_the_file_and_the_rule(files):
    root, _, (anns, _) = files
    with pytest.raises(FormatError, match="support question_id 201 has no question text"):
        vqa_support(anns, None, root / "train", "{image_id}.jpg", 1)
    broken = root / "broken.json"
    broken.write_text(json.dumps({"annotations": [{"image_id": 1}]}))
    with pytest.raises(FormatError, match="broken.json: record 0.*missing 'caption'"):
        caption_support(broken, root / "train", "{image_id}.jpg", 1)


def test_suite_spec_rules_for_shots(files):
    root, (anns, questions), (s_anns, s_questions) = files
    base = {"kind": "vqa", "annotations": str(anns), "images": str(root / "val")}
    spec = SuiteSpec(**base, shots=2, support_annotations=str(s_anns),
                     support_questions=str(s_questions), support_images=str(root / "train"))
    assert spec.shots == 2 and not spec.needs_data
    with pytest.raises(ValueError, match="a vqa suite with shots needs support_annotations"):
        SuiteSpec(**base, shots=2)
    with pytest.raises(ValueError, match="support_annotations apply to vqa and caption suites "
                                         "with shots only"):
        SuiteSpec(**base, support_annotations=str(s_anns))
    with pytest.raises(ValueError, match="support_questions apply to vqa suites only"):
        SuiteSpec(kind="caption", annotations="c.json", images="i", shots=1,
                  support_annotations="s.json", support_questions="q.json")
    with pytest.raises(ValueError, match="shots apply to synthetic, vqa and caption suites only"):
        SuiteSpec(kind="mcq", items="items.jsonl", shots=1)
    resolved = SuiteSpec(kind="caption", annotations="c.json", images="i", shots=1,
                         support_annotations="s.json", support_images="t").resolve_paths(root)
    assert resolved.support_annotations == str(root / "s.json")
    assert resolved.support_images == str(root / "t")


def _recorder(monkeypatch):
    """Replace the generator: record every prompt, answer 'red'."""
    import components.evaluation.generate as generate

    seen = []

    def fake(model, encoder, prompts, *, max_new_tokens, batch_size):
        seen.extend(prompts)
        return ["red"] * len(prompts)

    monkeypatch.setattr(generate, "generate_answers", fake)
    return seen


def test_vqa_suite_prompts_carry_k_shots_before_the_query(files, monkeypatch):
    from components.evaluation.runners import run_benchmark

    root, (anns, questions), (s_anns, s_questions) = files
    spec = SuiteSpec(kind="vqa", annotations=str(anns), questions=str(questions),
                     images=str(root / "val"), shots=2, support_annotations=str(s_anns),
                     support_questions=str(s_questions), support_images=str(root / "train"))
    seen = _recorder(monkeypatch)
    result = run_benchmark(spec, None, None, None, max_new_tokens=2, batch_size=2)
    support = vqa_support(s_anns, s_questions, root / "train", "{image_id}.jpg", 2)
    assert len(seen) == 3
    for (messages, images), qid in zip(seen, (101, 102, 103), strict=True):
        shots = support.draw(qid)
        assert [message_text(m) for m in messages] == [
            t for s in shots for t in (s.text, s.answer)] + [f"Colour {qid}?"]
        assert len(images) == image_placeholders(messages) == 3
        query_colour = Image.open(root / "val" / f"{qid - 100}.jpg").getpixel((0, 0))
        assert images[-1].getpixel((0, 0)) == query_colour
        assert all(f"val_{c}" not in message_text(m) for m in messages for c in COLOURS)
    assert result.metrics["accuracy"] == 0.0  # "red" is never "val_<colour>"


def test_caption_suite_on_a_tiny_model_with_shots(files, backbones, tokenizer, monkeypatch):
    """Two-shot captions through the real generator (three images a prompt); the prompts are
    the support set's."""
    import components.evaluation.generate as generate
    from components.evaluation.runners import run_benchmark
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    root, _, _ = files
    spec = SuiteSpec(kind="caption", annotations=str(root / "val_captions.json"),
                     images=str(root / "val"), shots=2,
                     support_annotations=str(root / "train_captions.json"),
                     support_images=str(root / "train"), metrics=["BLEU", "CIDEr"], seed=3)
    real, seen = generate.generate_answers, []

    def spy(model, encoder, prompts, **kw):
        seen.extend(prompts)
        return real(model, encoder, prompts, **kw)

    monkeypatch.setattr(generate, "generate_answers", spy)
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    result = run_benchmark(spec, model, ChatEncoder(processor, 512), None, max_new_tokens=3,
                           batch_size=2)
    assert [r["key"] for r in result.rows] == ["1", "2", "3"] and "CIDEr" in result.metrics
    support = caption_support(root / "train_captions.json", root / "train", "{image_id}.jpg", 2,
                              seed=3)
    for (messages, images), image_id in zip(seen, (1, 2, 3), strict=True):
        answers = [message_text(m) for m in messages if m["role"] == "assistant"]
        assert answers == [s.answer for s in support.draw(image_id)]
        assert len(images) == 3
