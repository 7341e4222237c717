"""Which files the contamination stage reads for MCQ suites in the published layouts."""

from __future__ import annotations

from pathlib import Path

from components.recipe import load_recipe
from flows.stages.data import contamination_suites

ROOT = Path(__file__).resolve().parents[3]


def test_scienceqa_reads_its_split_folder_and_mmbench_is_left_out(tmp_path):
    base = load_recipe(ROOT / "configs/micro.yaml")
    suites = {"sqa": {"kind": "mcq", "items": str(tmp_path / "problems.json"),
                      "items_format": "scienceqa", "images": str(tmp_path / "sqa"), "split": "val"},
              "mmb": {"kind": "mcq", "items": str(tmp_path / "MMBench_DEV_EN.tsv"),
                      "items_format": "mmbench", "circular": True},
              "mine": {"kind": "mcq", "items": str(tmp_path / "items.jsonl")}}
    recipe = base.model_copy(update={"evaluate": base.evaluate.model_copy(update={"suites": suites})})
    assert contamination_suites(recipe) == {"synthetic": {"split": "test"},
                                            "sqa": {"images": str(tmp_path / "sqa" / "val")},
                                            "mine": {"items": str(tmp_path / "items.jsonl")}}
