"""The dashboards' text: model cards and the markdown of the Prefect reports."""

from __future__ import annotations

from pathlib import Path

from components.recipe import load_recipe
from flows.lineage import artifact_key, card_context, markdown_table
from registry.model_card import model_card

ROOT = Path(__file__).resolve().parents[2]


def test_a_model_card_names_lineage_size_and_scores():
    card = model_card("vlm-tiny", "5", stage="align", kind="align", recipe="tiny",
                      architecture="idefics3", backbones={"vision": "registered:vision-tiny"},
                      data_version="522ac41bbb5c", parent_version="4", trainable_params=1180800,
                      total_params=2300000, trainable_groups={"vision": 0, "text": 1115264},
                      metrics={"loss_last": 0.69}, scores={"vqa_accuracy": 0.545})
    assert card.startswith("# vlm-tiny v5 — after stage `align`\n")
    for text in ("`models:/vlm-tiny/5`", "| vision backbone | registered:vision-tiny |",
                 "`models:/vlm-tiny/4`", "`522ac41bbb5c`", "1,180,800 of 2,300,000",
                 "text 1,115,264", "| loss_last | 0.69 |", "| vqa_accuracy | 0.545 |"):
        assert text in card


def test_an_unevaluated_version_says_so():
    card = model_card("vlm-tiny", "1", parent_version="backbones:vision-tiny=1,lm-tiny=1")
    assert "_not evaluated yet_" in card and "backbones:vision-tiny=1,lm-tiny=1" in card


def test_card_context_shows_the_recipe_backbones():
    ctx = card_context(load_recipe(ROOT / "configs/tiny.yaml"))
    assert ctx["architecture"].startswith("idefics3")
    assert ctx["backbones"]["vision"].startswith("registered:vision-tiny (hidden size 128")


def test_markdown_tables_and_artifact_keys():
    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"
    assert artifact_key("Pipeline_Tiny v2") == "pipeline-tiny-v2"
