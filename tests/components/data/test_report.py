"""The data report's new sections (components/data/report.py): image sizes, tokens per stage
(equal to what the recipe's processor encodes), modality mix, text-rich share, duplicates
and contamination, and their PNG plots."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from components.data.corpus import generate_corpus
from components.data.duplicates import DEFAULT_SUITES, contamination
from components.data.params import DataParams
from components.data.report import (
    PLOTS,
    StageView,
    TokenModel,
    build_report,
    render_markdown,
    write_plots,
)
from components.data.shards import read_samples, split_shards
from components.data.tokenizer import corpus_texts, train_tokenizer

PARAMS = DataParams(shard_size=16, splits={
    "train": {"scenes_caption": 6, "scenes_vqa": 8, "ocr": 4, "text": 3, "preference": 3},
    "test": {"scenes_vqa": 6, "ocr": 2}})
STAGES = (StageView("whole-32", "pretrain", 32, ("scenes_caption", "scenes_vqa")),
          StageView("turns-64", "pretrain", 64, ("scenes_vqa", "ocr"), split_turns=True),
          StageView("colour-64", "pretrain", 64, ("scenes_vqa",), split_turns=True,
                    question_types=("colour",)),
          StageView("sft", "sft", 64, ("scenes_vqa", "ocr", "text")),
          StageView("align", "align", 64, ("preference",)))
def _processor(tokenizer, longest_edge: int):
    from components.model.architectures.idefics3 import build_processor

    return build_processor(tokenizer, tile_size=32, longest_edge=longest_edge, patch_size=4,
                           scale_factor=4)


MODEL = TokenModel("idefics3", tile=32, patch=4, scale_factor=4, latents=16, max_length=120,
                   stages=STAGES, processor=_processor)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("report") / "data"
    generate_corpus(PARAMS, data / "shards", workers=1)
    train_tokenizer(corpus_texts(data / "shards"), 400, data / "tokenizer")
    (data / "contamination.json").write_text(
        json.dumps(contamination(data / "shards", DEFAULT_SUITES, "report")))
    return data


@pytest.fixture(scope="module")
def report(data_dir):
    return build_report(data_dir, MODEL)


def test_image_sizes_modality_and_text_rich_share(report):
    assert {len(v) for v in report.image_sizes.values()} and len(report.image_sizes["train"]) == 21
    assert set(report.image_sizes["train"]) == {(64, 64)}
    assert report.modality["text"] == {"image": 0, "text-only": 3, "multi-image": 0}
    assert report.modality["scenes_vqa"] == {"image": 14, "text-only": 0, "multi-image": 0}
    assert report.text_rich == {"train": (4, 21), "test": (2, 8)}  # the OCR images


def test_token_counts_are_what_the_recipes_processor_encodes(data_dir, report):
    """Every sample's count equals the length of the Idefics3 processor's encoding (the one a
    training stage builds: the data tokenizer, 32 px tiles, 4 px patches, scale factor 4)."""
    from transformers import AutoTokenizer

    from components.data.report import _rows
    from components.model.architectures.idefics3 import build_processor
    from components.model.chat import ChatEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    samples = list(read_samples(split_shards(data_dir / "shards", "train")))
    for counted in report.tokens:
        stage = counted.stage
        encoder = ChatEncoder(build_processor(tokenizer, tile_size=32, longest_edge=stage.longest_edge,
                                              patch_size=4, scale_factor=4), MODEL.max_length)
        mode = "align" if stage.kind == "align" else "split" if stage.split_turns else "whole"
        mine = [s for s in samples if s.record["source"] in stage.sources]
        lengths, skipped = [], 0
        for sample in mine:
            rows = _rows(sample.record, mode)
            if stage.question_types:
                rows = [r for r, q in zip(rows, sample.record.get("qtypes", []), strict=False)
                        if q in stage.question_types]
                if not rows:
                    continue
            ids = [len(encoder.tokenize(encoder._templater.apply_chat_template(r, tokenize=False),
                                        sample.images)[0]) for r in rows]
            lengths.append(max(ids))
            skipped += min(ids) > MODEL.max_length
        assert counted.total_tokens == lengths, stage.name
        assert counted.skipped == skipped, stage.name
    by_edge = {c.stage.longest_edge: set(c.image_tokens) for c in report.tokens if c.image_tokens}
    # 32 px: the global view (4 image tokens + 3 markers); 64 px: 2x2 tiles of 4 + 2 markers
    # each, 2 row breaks, then a break and the global view
    assert by_edge[32] == {7} and by_edge[64] == {4 * 6 + 2 + 1 + 7}
    assert any(c.skipped for c in report.tokens)  # max_length 120 is short for a 64 px caption


def test_the_markdown_embeds_or_names_the_plots(report):
    embedded = render_markdown(report, "v1", plots="", run_link="[run](http://x)")
    for name in PLOTS.values():
        assert f"]({name})" in embedded
    assert "![samples per source](samples.png)" in embedded and "MLflow run: [run](http://x)" in embedded
    named = render_markdown(report, "v1")
    assert "](" not in named.split("## Samples per task")[1]  # no image links
    assert "`tokens.png`" in named
    for heading in ("## Image sizes", "## Tokens per sample", "## Modality mix",
                    "## Contamination", "## Near-duplicates within the training split"):
        assert heading in embedded
    assert "| whole-32 | 32 px | 14 |" in embedded
    assert "Rule: a near-duplicate is the same image up to resizing" in embedded


def test_the_plots_are_written(tmp_path, data_dir, report):
    paths = write_plots(report, data_dir / "shards", tmp_path)
    assert sorted(p.name for p in paths) == sorted(PLOTS.values())
    for path in paths:
        with Image.open(path) as image:
            assert image.width > 100 and len(image.convert("RGB").getcolors(1 << 16) or []) > 2


def test_without_a_recipe_or_stage_the_sections_say_so(tmp_path, data_dir):
    (tmp_path / "shards").symlink_to(data_dir / "shards")
    md = render_markdown(build_report(tmp_path), "v")
    assert "No token counts (no recipe given)." in md
    assert "No contamination report (the stage did not run)." in md
