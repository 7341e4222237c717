"""POPE-style probes on real held-out scene records: balance, the three negative samplers,
determinism, per-sampler metrics, and errors naming the record; one tiny-model run."""

from __future__ import annotations

from collections import Counter

import pytest

from components.data.synthetic.scene import indefinite
from components.data.synthetic.scenes import generate_caption, generate_vqa
from components.evaluation.pope import (
    SAMPLERS,
    build_pope,
    evaluate_pope,
    pope_metrics,
    scene_objects,
    select_images,
)


def _scene(key, *objects):
    quadrants = ["top left", "top right", "bottom left", "bottom right"]
    return key, {"objects": [{"colour": c, "shape": s, "quadrant": q}
                             for (c, s), q in zip(objects, quadrants, strict=False)]}


@pytest.fixture(scope="module")
def test_split():
    """Held-out scene samples as the data stage writes them (test split)."""
    return ([generate_caption(0, i, "test") for i in range(12)]
            + [generate_vqa(0, i, "test") for i in range(24)])


def test_probes_are_balanced_share_positives_and_ask_about_real_objects(test_split):
    records = [(s.key, s.record) for s in test_split]
    questions = build_pope(records)
    n_objects = sum(len(r["objects"]) for _, r in records)
    for sampler in SAMPLERS:
        mine = [q for q in questions if q.sampler == sampler]
        assert len(mine) == 2 * n_objects
        assert sum(q.present for q in mine) == n_objects  # 50/50 yes/no
    for key, record in records:
        present = {(o["colour"], o["shape"]) for o in record["objects"]}
        per = [q for q in questions if q.sample_key == key]
        for sampler in SAMPLERS:
            pos = [(q.colour, q.shape) for q in per if q.sampler == sampler and q.present]
            neg = [(q.colour, q.shape) for q in per if q.sampler == sampler and not q.present]
            assert pos == [(o["colour"], o["shape"]) for o in record["objects"]]
            assert not set(neg) & present and len(set(neg)) == len(neg) == len(present)
    for q in questions:
        assert q.question == f"Is there {indefinite(q.object)} in the image?"
        assert q.answer == ("yes" if q.present else "no")


def test_popular_negatives_are_the_most_frequent_absent_objects():
    records = [_scene("a", ("red", "circle")), _scene("b", ("red", "circle"), ("blue", "square")),
               _scene("c", ("red", "circle"), ("blue", "square"), ("green", "triangle")),
               _scene("d", ("yellow", "circle"))]
    qs = build_pope(records, ["popular"])
    neg = {k: [(q.colour, q.shape) for q in qs if q.sample_key == k and not q.present]
           for k in "abcd"}
    # frequencies: red circle 3, blue square 2, green triangle 1, yellow circle 1
    assert neg["a"] == [("blue", "square")]
    assert neg["b"] == [("green", "triangle"), ("yellow", "circle")]
    assert neg["d"] == [("red", "circle")]


def test_adversarial_negatives_share_a_colour_or_shape_ranked_by_cooccurrence():
    records = [_scene("a", ("red", "circle")),
               _scene("b", ("red", "circle"), ("red", "square")),
               _scene("c", ("red", "circle"), ("red", "square")),
               _scene("d", ("blue", "circle"), ("red", "circle"))]
    qs = build_pope(records, ["adversarial"])
    (neg,) = [(q.colour, q.shape) for q in qs if q.sample_key == "a" and not q.present]
    assert neg == ("red", "square")  # shares "red" and co-occurs with red circle twice
    for key, record in records:
        present = scene_objects(key, record)
        for q in qs:
            if q.sample_key == key and not q.present:
                assert any(q.colour == c or q.shape == s for c, s in present)


def test_random_negatives_are_deterministic_per_seed_and_key(test_split):
    records = [(s.key, s.record) for s in test_split]
    a = build_pope(records, ["random"], seed=3)
    reordered = build_pope(records[::-1], ["random"], seed=3)

    def order(q):
        return q.sample_key, q.question

    assert sorted(a, key=order) == sorted(reordered, key=order)
    b = build_pope(records, ["random"], seed=4)
    assert [q.question for q in a] != [q.question for q in b]
    counts = Counter((q.colour, q.shape) for q in a if not q.present)
    assert len(counts) > 6  # spread over the object space


def test_metrics_per_sampler_use_the_yes_no_metrics():
    records = [_scene("a", ("red", "circle")), _scene("b", ("blue", "square"))]
    qs = build_pope(records, ["random", "popular"])
    always_yes = pope_metrics(qs, ["Yes."] * len(qs))
    assert always_yes["random_yes_ratio"] == 1.0 and always_yes["random_recall"] == 1.0
    assert always_yes["popular_accuracy"] == 0.5 and always_yes["popular_precision"] == 0.5
    assert always_yes["popular_hallucination_rate"] == 1.0
    perfect = pope_metrics(qs, [q.answer for q in qs])
    assert perfect["random_f1"] == perfect["popular_f1"] == perfect["mean_f1"] == 1.0
    assert perfect["mean_accuracy"] == 1.0 and perfect["random_yes_ratio"] == 0.5


@pytest.mark.parametrize(("record", "message"), [
    ({}, "record 'k': 'objects' must be a non-empty list"),
    ({"objects": [{"colour": "pink", "shape": "circle", "quadrant": "top left"}]},
     "record 'k': objects\\[0\\]: colour 'pink' is not one of"),
    ({"objects": [{"colour": "red", "shape": "circle", "quadrant": "top left"},
                  {"colour": "red", "shape": "circle", "quadrant": "top right"}]},
     "objects\\[1\\]: red circle appears twice"),
    ({"objects": [{"colour": "red", "shape": "circle", "quadrant": "middle"}]},
     "quadrant 'middle' is not one of"),
])
def test_bad_scene_records_are_named(record, message):
    with pytest.raises(ValueError, match=message):
        build_pope([("k", record)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="must contain '{object}'"):
        build_pope([_scene("a", ("red", "circle"))], template="Is it there?")
    with pytest.raises(ValueError, match="negative samplers"):
        build_pope([_scene("a", ("red", "circle"))], ["frequent"])
    with pytest.raises(ValueError, match="duplicate key"):
        build_pope([_scene("a", ("red", "circle"))] * 2)


def test_select_images_mixes_sources_deterministically(test_split):
    picked = select_images(test_split, 10, seed=0)
    assert len(picked) == 10 and picked == select_images(test_split, 10, seed=0)
    assert {s.record["source"] for s in picked} == {"scenes_caption", "scenes_vqa"}
    assert len(select_images(test_split, None)) == len(test_split)


def test_evaluate_pope_with_a_tiny_model(backbones, tokenizer, test_split):
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8,
                                scale_factor=2)
    scenes = select_images(test_split, 4)
    result = evaluate_pope(model, ChatEncoder(processor, 512), scenes, max_new_tokens=2)
    qs = build_pope([(s.key, s.record) for s in scenes])
    assert len(result.rows) == len(qs)
    assert {f"{s}_{m}" for s in SAMPLERS for m in ("accuracy", "precision", "recall", "f1",
                                                   "yes_ratio")} <= set(result.metrics)
    assert result.metrics == pope_metrics(qs, [r["prediction"] for r in result.rows])
    # the same question about the same image gets the same (greedy) answer in every sampler
    answers = {}
    for r in result.rows:
        assert answers.setdefault((r["key"], r["question"]), r["prediction"]) == r["prediction"]


def test_a_pope_question_file_over_an_image_folder(backbones, tokenizer, tmp_path):
    """POPE's published layout (JSONL question_id/image/text/label) runs without data; its
    yes/no metrics are the ones of the answers; a bad line is named."""
    import json

    from PIL import Image

    from components.evaluation.official_formats import FormatError, load_pope_questions
    from components.evaluation.runners import run_benchmark
    from components.evaluation.suites import SuiteSpec
    from components.evaluation.yes_no import yes_no_metrics
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.chat import ChatEncoder

    (tmp_path / "images").mkdir()
    for name, colour in (("a.jpg", "red"), ("b.jpg", "blue")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / "images" / name)
    rows = [{"question_id": i, "image": image, "text": f"Is there a {obj} in the image?", "label": label}
            for i, (image, obj, label) in enumerate([("a.jpg", "red circle", "yes"),
                                                     ("a.jpg", "cat", "no"),
                                                     ("b.jpg", "blue square", "yes")], 1)]
    path = tmp_path / "coco_pope_random.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SuiteSpec(kind="pope", questions=str(path), images=str(tmp_path / "images"))
    assert not spec.needs_data
    model = assemble_idefics3(*backbones, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    result = run_benchmark(spec, model, ChatEncoder(processor, 512), None, max_new_tokens=2,
                           batch_size=4)
    assert [r["key"] for r in result.rows] == ["1", "2", "3"]
    assert result.metrics == yes_no_metrics([r["prediction"] for r in result.rows], [True, False, True])
    path.write_text(json.dumps({**rows[0], "label": "maybe"}) + "\n")
    with pytest.raises(FormatError, match="line 1: 'label' must be yes or no"):
        load_pope_questions(path)
    with pytest.raises(ValueError, match="needs both questions and images"):
        SuiteSpec(kind="pope", questions=str(path))
