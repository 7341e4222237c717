"""The recipe's pre-flight: every backbone, dataset and suite file it names can be reached,
the data fits the disk, and a run that cannot succeed fails before any stage does work,
naming everything missing (configs/smolvlm-256m.yaml offline: both hub backbones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.data.params import DataParams
from components.recipe import Recipe, load_recipe
from components.recipe_checks import (
    DUE_STAGES,
    PreflightError,
    backbone_problem,
    check_recipe,
    data_unchanged,
    disk_problems,
    estimate_data,
    preflight,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, the hub offline; ``add(repo, weights)`` caches a
    model the way `huggingface_hub` lays it out."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def add(repo: str, weights: bool = True) -> None:
        folder = cache / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / "0123abc"
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("0123abc")
        (snapshot / "config.json").write_text("{}")
        if weights:
            (snapshot / "model.safetensors").write_bytes(b"\0")
    return add


def _recipe(**model) -> Recipe:
    raw = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    raw["model"].update(model)
    return Recipe.model_validate(raw)


def test_hub_backbones_must_be_in_the_cache_when_offline(hub_cache):
    assert "is not in the local Hugging Face cache" in backbone_problem("org/missing", Path.cwd(), (), None)
    assert "offline" in backbone_problem("org/missing", Path.cwd(), (), None)
    hub_cache("org/cached")
    assert backbone_problem("org/cached", Path.cwd(), (), None) is None
    hub_cache("org/no-weights", weights=False)
    assert "without weights" in backbone_problem("org/no-weights", Path.cwd(), (), None)


def test_directories_inline_and_registered_backbones(tmp_path):
    model = tmp_path / "lm"
    model.mkdir()
    assert "no config.json" in backbone_problem(str(model), tmp_path, (), None)
    (model / "config.json").write_text("{}")
    assert backbone_problem(str(model), tmp_path, (), None) is None
    assert backbone_problem("lm", tmp_path, (), None) is None  # relative to the base
    assert "does not exist" in backbone_problem("./gone", tmp_path, (), None)
    assert backbone_problem("inline", tmp_path, (), None) is None
    assert backbone_problem("registered:lm-x", tmp_path, {"lm-x"}, None) is None  # trained by the run
    assert backbone_problem("registered:lm-x", tmp_path, (), lambda name: name == "lm-x") is None
    assert "not in the model registry" in backbone_problem("registered:lm-x", tmp_path, (), lambda n: False)


def test_registered_backbones_count_only_when_the_backbones_stage_is_due():
    recipe = _recipe()  # registered:vision-micro / registered:lm-micro, trained by its backbones
    assert check_recipe(recipe, due=("backbones", "training"), registered=lambda n: False) == []
    problems = check_recipe(recipe, due=("training",), registered=lambda n: False)
    assert [p.where for p in problems] == ["model.vision", "model.text"]
    assert check_recipe(recipe, due=("training",), registered=lambda n: True) == []


def test_missing_dataset_and_suite_files_are_each_named(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    raw["data"]["datasets"] = {"shapes": {"format": "vqav2", "source": str(tmp_path / "vqa"),
                                          "images": str(tmp_path / "img"),
                                          "files": {"train": "q.json"}}}
    raw["evaluate"]["suites"] = {"textvqa": {"kind": "vqa", "annotations": "a.json", "images": "imgs"}}
    recipe = Recipe.model_validate(raw)
    problems = check_recipe(recipe, due=("data", "evaluate"), base=tmp_path)
    assert [p.where for p in problems] == ["data.datasets.shapes.source", "evaluate.suites.textvqa.annotations",
                                          "evaluate.suites.textvqa.images"]
    (tmp_path / "vqa").mkdir()
    problems = check_recipe(recipe, due=("data",), base=tmp_path)
    assert [p.where for p in problems] == ["data.datasets.shapes.files.train", "data.datasets.shapes.images"]


def test_the_size_estimate_matches_generated_shards(tmp_path):
    """The estimate against the shards the generators really write (three sources, two sizes)."""
    from components.data.corpus import generate_corpus

    for size in (32, 96):
        params = DataParams(image_size=size, shard_size=16,
                            splits={"train": {"scenes_vqa": 24, "ocr": 12, "text": 12, "preference": 0,
                                              "scenes_caption": 0}})
        out = tmp_path / str(size)
        generate_corpus(params, out, workers=1)
        written = sum(f.stat().st_size for f in out.rglob("*.tar"))
        estimated = estimate_data(params).shard_bytes
        assert written <= estimated <= written * 1.5, (size, written, estimated)


def test_a_data_stage_larger_than_the_free_disk_is_refused(tmp_path):
    huge = DataParams(image_size=2048, splits={"train": {"scenes_vqa": 50_000_000}})
    problems = disk_problems(huge, tmp_path / "data" / "huge")
    assert len(problems) == 1 and "needs about" in problems[0].detail and "free" in problems[0].detail
    small = DataParams(image_size=32, splits={"train": {"text": 10}})
    assert disk_problems(small, tmp_path / "data" / "small") == []


def test_a_workspace_holding_the_same_data_needs_no_new_space(tmp_path):
    huge = DataParams(image_size=2048, splits={"train": {"scenes_vqa": 50_000_000}})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "params.yaml").write_text(yaml.safe_dump({"data": huge.stage_params(), "sources": []}))
    assert not data_unchanged(huge, workspace)  # no dvc.lock: never produced
    (workspace / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert data_unchanged(huge, workspace) and disk_problems(huge, workspace) == []


def test_one_error_names_everything(hub_cache, tmp_path):
    recipe = _recipe(vision="google/siglip-base-patch16-512", text="HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(PreflightError) as err:
        preflight(recipe, due=DUE_STAGES, workspace=tmp_path / "ws")
    message = str(err.value)
    assert "'google/siglip-base-patch16-512'" in message and "'HuggingFaceTB/SmolLM2-135M'" in message
    assert message.startswith("pre-flight of recipe 'micro' failed (2 problems); nothing was run")


def test_smolvlm_fails_at_once_offline_naming_both_hub_backbones(tmp_path):
    """The real command on configs/smolvlm-256m.yaml with an empty hub cache: exit 2 naming
    both backbones, before anything starts (no tracking store, no data, no Prefect server)."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HF_", "MLFLOW_"))}
    env.update(VLMFORGE_HOME=str(home), HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--recipe",
                           "configs/smolvlm-256m.yaml"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "pre-flight of recipe 'smolvlm-256m' failed" in err
    for repo in ("google/siglip-base-patch16-512", "HuggingFaceTB/SmolLM2-135M"):
        assert f"hub model '{repo}' is not in the local Hugging Face cache" in err, err
    assert "offline" in err
    assert "Starting temporary server" not in proc.stdout + err
    assert not (home / "mlflow.db").exists() and not (home / "data").exists()


def test_shipped_recipes_miss_only_hub_models_and_exported_data():
    """On a fresh checkout a shipped recipe may miss only hub backbones (offline, not cached
    here) and the files `vlmforge export` writes for configs/byod-example.yaml (data/byod/)."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if not (isinstance(raw, dict) and "stages" in raw):
            continue
        problems = check_recipe(load_recipe(path), base=ROOT, registered=lambda n: False)
        for p in problems:
            hub = p.where.startswith("model.") and "hub model" in p.detail
            exported = str(ROOT / "data" / "byod") in p.detail
            assert hub or exported, (path.name, str(p))
