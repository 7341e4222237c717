"""`vlmforge ablate` end to end on the micro recipe: two arms x two seeds as real pipelines under
one MLflow parent run, the shared SFT prefix trained once per seed, the table, the verdict and
the plots logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import registry
from components.ablation import Study, arm_recipe
from components.recipe import Recipe
from flows.ablate import ablate
from flows.environment import vlmforge_home

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

pytestmark = pytest.mark.slow


def micro_study(name: str) -> Study:
    return Study.model_validate({
        "name": name, "source": "RLHF-V", "claim": "alignment lowers hallucination",
        "base": "../micro.yaml", "primary": "hallucination_rate", "metrics": ["vqa_accuracy"],
        "baseline": "sft-only", "treatment": "aligned", "direction": "lower",
        "arms": {"sft-only": {"stages": {"align": None}}, "aligned": {}}, "seeds": [0, 1]})


def test_an_alignment_study_runs_its_arms_and_logs_table_verdict_and_plots():
    study = micro_study("micro-align")
    registry.configure(vlmforge_home())
    base = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    result = ablate(study, base)

    assert set(result["table"]) == {"sft-only", "aligned"}
    for arm in result["table"].values():
        low, mean, high = (arm["hallucination_rate"][k] for k in ("ci_low", "mean", "ci_high"))
        assert low <= mean <= high
    assert result["difference"]["n"] == 2
    assert isinstance(result["reproduced"], bool)
    # the backbones' own metrics join the scores; both arms of a seed share one trained tower
    for plain, aligned in zip(result["scores"]["sft-only"].values(),
                              result["scores"]["aligned"].values(), strict=True):
        assert {"vision_seconds", "vision_loss_last", "lm_seconds"} <= set(plain)
        assert plain["vision_seconds"] == aligned["vision_seconds"] > 0
    # per seed the aligned arm reuses the sft-only arm's three stages and trains align alone
    for seed in study.seeds:
        name = Recipe.model_validate(arm_recipe(study, base, "aligned", seed)).registered_model
        assert len(registry.list_versions(name)) == 4
    run = registry.get_run(result["run_id"])
    assert run["status"] == "FINISHED"
    assert run["metrics"]["reproduced"] == float(result["reproduced"])
    from registry.tracking import client

    files = {a.path for a in client().list_artifacts(result["run_id"], "plots")}
    assert files == {"plots/arms.png", "plots/curves.png"}


def test_with_two_workers_each_seed_runs_in_its_own_process_under_the_same_parent_run():
    study = micro_study("micro-align-2w")
    registry.configure(vlmforge_home())
    base = yaml.safe_load((CONFIGS / "micro.yaml").read_text())
    result = ablate(study, base, workers=2)

    assert result["difference"]["n"] == 2
    assert set(result["scores"]["aligned"]) == {"0", "1"}
    from registry.tracking import client

    pipelines = client().search_runs(
        [client().get_run(result["run_id"]).info.experiment_id],
        f"tags.mlflow.parentRunId = '{result['run_id']}'")
    # every arm of every seed: one pipeline run nested under the study's run, finished
    assert sorted(r.info.run_name for r in pipelines) == sorted(
        f"pipeline-abl-micro-align-2w-s{s}" for s in (0, 1) for _ in range(2))
    assert {r.info.status for r in pipelines} == {"FINISHED"}
    for seed in study.seeds:  # the children shared each seed's prefix as the in-process path does
        name = Recipe.model_validate(arm_recipe(study, base, "aligned", seed)).registered_model
        assert len(registry.list_versions(name)) == 4
