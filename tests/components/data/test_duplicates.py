"""Exact and near-duplicate images (components/data/duplicates.py): planted copies of a suite's
images are found, clean generated images with different content never match, and the
quarantine is read only in quarantine mode."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.data.corpus import generate_samples
from components.data.duplicates import (
    CANDIDATE_RMS,
    Match,
    build_index,
    candidate_pairs,
    duplicate_summary,
    find_duplicates,
    folder_images,
    is_near_duplicate,
    quarantined_keys,
    resized_copy,
    shard_images,
    verify_distances,
    verify_features,
)
from components.data.export import export_coco_captions
from components.data.shards import write_shard
from components.data.synthetic.scene import Scene, SceneObject, render_scene

# (scale, JPEG quality or None) of the 20 planted copies: within the rule (factor >= 0.5,
# quality >= 75), exact ones included
PLANTED = [(1, None)] * 4 + [(2, 95), (2, 75), (1.5, 90), (1.5, 75), (3, 85), (1.25, 80),
                             (1, 95), (1, 75), (0.75, 90), (0.75, 75), (0.6, 85), (0.5, 95),
                             (0.5, 75), (4, 75), (1, 85), (0.8, 80)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A COCO-captions suite folder and a training folder: 40 images of other scenes plus 20
    copies of suite images (exact, resized and re-encoded); returns both folders and
    {training file: suite file}."""
    root = tmp_path_factory.mktemp("planted")
    export_coco_captions("scenes_caption", 40, root / "suite", seed=2, subset="val2014")
    export_coco_captions("scenes_caption", 40, root / "train", seed=1)
    suite, train = root / "suite" / "val2014", root / "train" / "train2014"
    originals = sorted(suite.glob("*.jpg"))
    planted = {}
    for n, ((scale, quality), original) in enumerate(zip(PLANTED, originals[::2], strict=False)):
        name = f"planted_{n:02d}.png"
        if scale == 1 and quality is None and n % 2:
            name = name.replace(".png", ".jpg")
            shutil.copyfile(original, train / name)  # the same bytes
        else:  # exact pixels re-saved as PNG, or a resized / re-encoded copy
            with Image.open(original) as image:
                resized_copy(image, scale, quality).save(train / name)
        planted[name] = original.name
    return suite, train, planted


def test_twenty_planted_copies_are_found_twenty_of_twenty(planted):
    suite, train, planted_copies = planted
    matches = find_duplicates(folder_images(train), folder_images(suite))
    found = {m.a: m.b for m in matches}
    assert found == planted_copies  # every copy, matched to its original, and nothing else
    kinds = {m.a: m.kind for m in matches}
    exact = {name for name, (scale, quality) in zip(sorted(planted_copies), PLANTED, strict=True)
             if scale == 1 and quality is None}
    assert {n for n, k in kinds.items() if k == "exact"} == exact


def test_an_index_too_large_to_keep_its_images_finds_the_same_copies(planted):
    suite, train, _ = planted
    kept = find_duplicates(folder_images(train), folder_images(suite))
    a, b = (build_index(folder_images(f)(), keep_pixels=0) for f in (train, suite))
    assert a.images is None and b.images is None  # stage 2 reads the candidates again
    assert find_duplicates(folder_images(train), folder_images(suite), a_index=a, b_index=b) == kept


def test_stacked_features_are_each_images_own():
    """Stage 2 filters a stack of images at once: no filter may smooth across the stack."""
    images = [_scene(shape) for shape in ("circle", "square", "triangle")]
    blurred, edges = verify_features(images, (64, 64))
    for n, image in enumerate(images):
        alone = verify_features([image], (64, 64))
        assert (blurred[n] == alone[0][0]).all() and (edges[n] == alone[1][0]).all()


def test_stage_one_keeps_every_planted_copy_as_a_candidate(planted):
    suite, train, planted_copies = planted
    a, b = build_index(folder_images(train)()), build_index(folder_images(suite)())
    pairs = {(a.ids[i], b.ids[j]) for i, j, _ in candidate_pairs(a, b)}
    assert set(planted_copies.items()) <= pairs
    assert all(r <= CANDIDATE_RMS for _, _, r in candidate_pairs(a, b))


def content(sample) -> tuple:
    """What a synthetic sample shows: its objects, or its OCR text."""
    if "objects" in sample.record:
        return tuple(sorted((o["colour"], o["shape"], o["quadrant"]) for o in sample.record["objects"]))
    return tuple(sample.record.get("answers") or [])


def test_no_false_positive_on_clean_generated_data(tmp_path):
    """A few hundred images of the tiny recipe's data, train against test: every pair the
    detector flags shows the same content (the same objects, or the same OCR text)."""
    samples = {"train": [], "test": []}
    for split, count in (("train", 120), ("test", 60)):
        for source in ("scenes_caption", "scenes_vqa", "ocr", "preference"):
            if split == "test" and source == "preference":
                continue
            samples[split] += list(generate_samples(source, 0, split, 0, count))
    by_id = {}
    for split, items in samples.items():
        for s in items:
            path = tmp_path / split / f"{s.key}.png"
            path.parent.mkdir(exist_ok=True)
            s.images[0].save(path)
            by_id[f"{split}/{path.name}"] = s
    matches = find_duplicates(folder_images(tmp_path / "train"), folder_images(tmp_path / "test"))
    different = [m for m in matches
                 if content(by_id[f"train/{m.a}"]) != content(by_id[f"test/{m.b}"])]
    assert not different
    within = find_duplicates(folder_images(tmp_path / "train"))
    assert not [m for m in within if content(by_id[f"train/{m.a}"]) != content(by_id[f"train/{m.b}"])]


def _scene(shape: str) -> Image.Image:
    scene = Scene((SceneObject("yellow", shape, "top left"),), (245, 245, 245))
    return render_scene(scene, random.Random(7), 64)  # same noise, size and place


def test_a_changed_shape_is_not_a_copy_but_a_small_jpeg_of_it_is():
    circle, square = _scene("circle"), _scene("square")
    assert is_near_duplicate(*verify_distances(circle, resized_copy(circle, 0.5, 75)))
    assert is_near_duplicate(*verify_distances(resized_copy(circle, 2, 75), circle))
    assert not is_near_duplicate(*verify_distances(circle, square))


def test_within_split_duplicates_form_groups():
    matches = [Match("a", "b", "near", 0.01, 1.0, 1.0), Match("b", "c", "exact", 0.0, 0.0, 0.0),
               Match("d", "e", "near", 0.02, 2.0, 1.0)]
    summary = duplicate_summary(matches)
    assert (summary["pairs"], summary["exact_pairs"], summary["images"], summary["groups"],
            summary["extra_copies"]) == (3, 1, 5, 2, 3)


def test_the_quarantine_is_read_only_in_quarantine_mode(tmp_path):
    (tmp_path / "shards").mkdir()
    assert quarantined_keys(tmp_path / "shards") == frozenset()
    report = {"mode": "report", "quarantined": []}
    (tmp_path / "contamination.json").write_text(json.dumps(report))
    assert quarantined_keys(tmp_path / "shards") == frozenset()
    report = {"mode": "quarantine", "quarantined": ["k1", "k2"]}
    (tmp_path / "contamination.json").write_text(json.dumps(report))
    assert quarantined_keys(tmp_path / "shards") == {"k1", "k2"}


def test_unreadable_suite_files_are_skipped(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    assert [i for i, _ in folder_images(tmp_path)()] == ["ok.png"]
    assert isinstance(next(iter(folder_images(Path(tmp_path))()))[1], Image.Image)


def test_a_source_asked_for_some_ids_decodes_only_those(tmp_path):
    samples = list(generate_samples("scenes_vqa", 0, "train", 0, 5, image_size=32))
    write_shard(samples, tmp_path / "train-0000.tar")
    read = shard_images([tmp_path / "train-0000.tar"], "train/")
    everything = dict(read())
    assert len(everything) == 5
    wanted = {f"train/{samples[1].key}/000.png", f"train/{samples[3].key}/000.png", "train/absent/000.png"}
    some = dict(read(wanted))
    assert set(some) == wanted - {"train/absent/000.png"}
    assert all(some[i].tobytes() == everything[i].tobytes() for i in some)
    folder = tmp_path / "images"
    folder.mkdir()
    for s in samples:
        s.images[0].save(folder / f"{s.key}.png")
    assert [i for i, _ in folder_images(folder)({f"{samples[0].key}.png"})] == [f"{samples[0].key}.png"]
