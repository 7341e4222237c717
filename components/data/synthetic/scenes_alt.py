"""Alt-text style scene captions: short and noisy, to compare with the dense synthetic captions.

Web alt-text (LAION-like) names some objects, miscounts, drops attributes and wraps the
content in filler ("stock photo of ..."). Idefics 2 found synthetic dense captions beat
it; generating both over the same scene distribution lets the two be compared.
"""

from __future__ import annotations

import random

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.scene import NUMBER_WORDS, Scene, caption, render_scene, sample_scene
from components.data.synthetic.scenes import CAPTION_PROMPT, scene_record

SOURCE = "scenes_alt_caption"
PREFIXES = ("", "", "stock photo of ", "image may contain: ", "picture of ", "clipart ",
            "hd wallpaper ", "free vector ", "illustration of ")
SUFFIXES = ("", "", " - royalty free", " | free download", " png", " background",
            " stock image", " on white", " #design")
WRONG_COUNT = ("a few shapes", "some shapes", "many shapes", "shapes")


def alt_caption(scene: Scene, rng: random.Random) -> tuple[str, list[str]]:
    """A noisy caption and the corruptions applied: missing objects, wrong count,
    dropped colour, filler words."""
    noise: list[str] = []
    objs = list(scene.objects)
    kept = [o for o in objs if rng.random() < 0.6]
    if len(kept) < len(objs):
        noise.append("missing_objects")
    phrases = []
    for o in kept:
        if rng.random() < 0.3:
            phrases.append(o.shape)
            noise.append("dropped_colour")
        else:
            phrases.append(o.phrase)
    n = len(objs)
    if rng.random() < 0.35:
        wrong = rng.choice([k for k in range(1, 4) if k != n] + [None])
        if wrong is None:
            phrases.append(rng.choice(WRONG_COUNT))
        else:
            phrases.append(f"{NUMBER_WORDS[wrong]} shape" + ("s" if wrong > 1 else ""))
        noise.append("wrong_count")
    if not phrases:
        phrases = [rng.choice(("shapes", "abstract", "geometric pattern", "colours"))]
    body = " ".join(phrases) if rng.random() < 0.5 else ", ".join(phrases)
    prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
    if prefix or suffix:
        noise.append("filler")
    return f"{prefix}{body}{suffix}".strip(), sorted(set(noise))


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """"Describe the image." -> a short, noisy alt-text caption; the dense caption is kept
    in ``dense_caption`` for comparison."""
    rng = sample_rng(seed, split, SOURCE, index)
    scene = sample_scene(rng)
    image = render_scene(scene, rng, image_size)
    text, noise = alt_caption(scene, rng)
    record = scene_record("caption", SOURCE, scene, [user_turn(CAPTION_PROMPT, 1),
                                                      assistant_turn(text)])
    record.update(answers=[text], dense_caption=caption(scene.objects), noise=noise)
    return Sample(sample_key(SOURCE, split, index), [image], record)
