"""The alignment and text-only checks of the stage comparison."""

from pathlib import Path

import pytest

from components.recipe import load_recipe
from flows.stages.compare import StageComparison, alignment_checks

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_checks_compare_align_with_its_parent_and_sft_with_the_stage_before():
    recipe = load_recipe(CONFIGS / "tiny.yaml")
    metrics = {"pretrain-32px-ocr": {"text_accuracy": 0.4, "text_answer_nll": 3.0, "hallucination_rate": 0.5,
                                     "vqa_accuracy": 0.5},
               "sft": {"text_accuracy": 0.6, "text_answer_nll": 2.0, "hallucination_rate": 0.4,
                       "vqa_accuracy": 0.7},
               "align": {"text_accuracy": 0.6, "hallucination_rate": 0.1, "vqa_accuracy": 0.69}}
    checks = alignment_checks(recipe, metrics)
    assert checks["align_hallucination_reduction"] == pytest.approx(0.75)
    assert checks["align_vqa_drop_points"] == pytest.approx(1.0)
    assert (checks["sft_text_accuracy_before"], checks["sft_text_accuracy_after"]) == (0.4, 0.6)
    assert (checks["sft_text_answer_nll_before"], checks["sft_text_answer_nll_after"]) == (3.0, 2.0)
    table = StageComparison({s: "1" for s in metrics}, metrics, checks).render()
    assert "align_hallucination_reduction = 0.750" in table


def test_missing_stages_give_no_checks():
    recipe = load_recipe(CONFIGS / "tiny.yaml")
    assert alignment_checks(recipe, {"sft": {"hallucination_rate": 0.3}}) == {}
