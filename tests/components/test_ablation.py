"""Ablation studies: overrides merge into the base recipe by stage name, arms of one seed share
names, and the verdict is the seed-paired difference's 95 % interval in the claimed direction."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from components.ablation import (
    Study,
    arm_recipe,
    load_study,
    mean_interval,
    merge,
    plot_arms,
    plot_curves,
    verdict,
)
from components.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]


def _study(**kw) -> Study:
    return Study.model_validate({
        "name": "align", "source": "RLHF-V", "claim": "alignment lowers hallucination",
        "base": "../micro.yaml", "primary": "hallucination_rate", "metrics": ["vqa_accuracy"],
        "baseline": "sft-only", "treatment": "aligned", "direction": "lower",
        "arms": {"sft-only": {"stages": {"align": None}}, "aligned": {}}, **kw})


def test_overrides_merge_by_stage_name_and_arms_share_names():
    base = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    study = _study(common={"stages": {"sft": {"train": {"steps": 5}}}})
    plain = Recipe.model_validate(arm_recipe(study, base, "aligned", 1))
    dropped = Recipe.model_validate(arm_recipe(study, base, "sft-only", 1))
    assert [s.name for s in dropped.stages] == [s.name for s in plain.stages][:-1]
    assert plain.stages_of("sft")[0].train.steps == 5 and plain.stages_of("sft")[0].train.lr == 1e-3
    assert (plain.name, plain.registered_model, plain.seed, plain.data.seed) == \
        ("abl-align-s1", "vlm-abl-align-s1", 1, 1)
    assert plain.model.vision == "registered:vision-micro-abl-align-s1" == \
        f"registered:{plain.backbones.vision.registered_model}"
    assert dropped.name == plain.name  # one data workspace and one model name per seed
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": None, "d": 3}}) == {"a": {"b": 1, "d": 3}}
    with pytest.raises(ValueError, match="drop unknown stages"):
        merge(base, {"stages": {"nope": None}})


def test_mean_interval_is_a_t_interval():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert mean_interval([0.5])[1:] == (-math.inf, math.inf)


def test_the_claim_reproduces_only_when_the_paired_interval_excludes_zero(tmp_path):
    study = _study()
    clear = {"aligned": {s: {"hallucination_rate": 0.20 + 0.01 * s} for s in range(3)},
             "sft-only": {s: {"hallucination_rate": 0.30 + 0.012 * s, "vqa_accuracy": 0.6} for s in range(3)}}
    result = verdict(study, clear)
    assert result["reproduced"] and result["difference"]["ci_high"] < 0
    assert result["table"]["sft-only"]["vqa_accuracy"]["mean"] == pytest.approx(0.6)
    noisy = {"aligned": {0: {"hallucination_rate": 0.2}, 1: {"hallucination_rate": 0.35},
                         2: {"hallucination_rate": 0.25}},
             "sft-only": {s: {"hallucination_rate": 0.28} for s in range(3)}}
    assert not verdict(study, noisy)["reproduced"]
    assert plot_arms(result, tmp_path / "arms.png").stat().st_size > 0
    assert plot_curves({"aligned": [(10, 0.3), (20, 0.2)]}, "hallucination_rate",
                       tmp_path / "c.png").stat().st_size > 0


def test_every_shipped_study_loads_and_its_arms_make_valid_recipes():
    for path in sorted((ROOT / "configs" / "ablations").glob("*.yaml")):
        study = load_study(path)
        base = yaml.safe_load((path.parent / study.base).read_text())
        for arm in study.arms:
            Recipe.model_validate(arm_recipe(study, base, arm, study.seeds[0]))
