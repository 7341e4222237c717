"""Scene task family: the caption and VQA generators."""

from __future__ import annotations

from typing import Any

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic import questions
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import (
    HELD_OUT_CANVAS,
    Scene,
    reference_captions,
    render_scene,
    sample_scene,
)

CAPTION_PROMPT = "Describe the image."


def scene_record(
    task: str, source: str, scene: Scene, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """The common part of a scene record."""
    return {
        "task": task,
        "source": source,
        "messages": messages,
        "objects": [o.as_dict() for o in scene.objects],
    }


def generate_caption(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """Single turn: "Describe the image." -> canonical dense caption; answers hold all references."""
    source = "scenes_caption"
    rng = sample_rng(seed, split, source, index)
    scene = sample_scene(rng)
    image = render_scene(scene, rng, image_size)
    refs = reference_captions(scene)
    record = scene_record(
        "caption", source, scene, [user_turn(CAPTION_PROMPT, 1), assistant_turn(refs[0])]
    )
    record["answers"] = refs
    return Sample(sample_key(source, split, index), [image], record)


def generate_vqa(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """Scene VQA: test holds one stratified question (half in held-out phrasings, a quarter on
    images in a held-out style); train/val one 3-5 turn conversation."""
    source = "scenes_vqa"
    rng = sample_rng(seed, split, source, index)
    if split == "test":
        qtype, spec = questions.stratified(index)
        held_out = questions.held_out_style(index)
        scene = sample_scene(rng, require_unique_shape=qtype == "colour",
                             require_unique_colour=qtype == "shape", held_out_style=held_out)
        canvas = round(image_size * HELD_OUT_CANVAS) if held_out else image_size
        image = render_scene(scene, rng, canvas)
        qa = questions.ask(scene, rng, qtype, **spec)
        record = scene_record(
            "vqa", source, scene, [user_turn(qa.question, 1), assistant_turn(qa.answer)]
        )
        record.update(qa.extra(), style="unseen" if held_out else "seen")
        record["answers"] = [qa.answer]
        return Sample(sample_key(source, split, index), [image], record)
    scene = sample_scene(rng)
    image = render_scene(scene, rng, image_size)
    qas = questions.conversation(scene, rng, rng.randint(3, 5))
    messages: list[dict[str, Any]] = []
    for i, qa in enumerate(qas):
        messages += [user_turn(qa.question, 1 if i == 0 else 0), assistant_turn(qa.answer)]
    record = scene_record("vqa", source, scene, messages)
    record["qtypes"] = [qa.qtype for qa in qas]
    return Sample(sample_key(source, split, index), [image], record)
