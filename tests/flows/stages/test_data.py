"""dvc.yaml: a generate stage per source, the mix (shards) stage, validate and tokenizer;
`dvc repro` builds the same shards as generating every source at once."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.data.corpus import generate_corpus
from components.data.mix import only_source, used_sources
from components.data.params import SOURCES, DataParams, load_data_params
from components.recipe import load_recipe
from flows.stages.data import _dvc, prepare_workspace, read_version, render_dvc_yaml

ROOT = Path(__file__).resolve().parents[3]
SPEC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SMALL = DataParams(seed=3, shard_size=4, vocab_size=400,
                   splits={"train": {"scenes_vqa": 6, "text": 5}, "val": {"scenes_vqa": 2}})


def test_a_generate_stage_per_source_then_shards_validate_tokenizer():
    stages = SPEC["stages"]
    assert list(stages) == ["generate", "ingest", "shards", "validate", "tokenizer", "contamination"]
    assert stages["ingest"]["foreach"] == "${data.datasets}"
    assert {"${item.source}", "${item.images}"} <= set(stages["ingest"]["do"]["deps"])
    generate = stages["generate"]
    assert generate["foreach"] == "${sources}"
    assert generate["do"]["outs"] == ["data/sources/${item}"]
    assert "--source ${item}" in generate["do"]["cmd"]
    assert {"data.seed", "data.image_size", "data.shard_size", "data.splits"} <= set(
        generate["do"]["params"])
    assert "data/sources" in stages["shards"]["deps"] and stages["shards"]["outs"] == ["data/shards"]
    for name in ("validate", "tokenizer"):
        assert "data/shards" in stages[name]["deps"]


def test_generate_stages_depend_on_every_generator_module():
    """Editing any module the generators import re-runs them (no stale data)."""
    code = ("import sys, components.data.corpus, components.data.mix; "
            "print(' '.join(m for m in sys.modules if m.startswith('components.data.')))")
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout.split()
    deps = SPEC["stages"]["generate"]["do"]["deps"]
    needed = {str((ROOT / m.replace(".", "/")).with_suffix(".py").relative_to(ROOT))
              if not (ROOT / m.replace(".", "/")).is_dir()
              else f"{m.replace('.', '/')}/__init__.py" for m in mods}
    missing = {f for f in needed if not any(f == d or f.startswith(d + "/") for d in deps)}
    assert not missing, f"add to dvc.yaml generate deps: {sorted(missing)}"


def test_a_code_folder_dependency_is_its_python_files(tmp_path):
    """The workspace's dvc.yaml lists a package's .py files, so compiled caches never change
    a stage's dependency hash."""
    rendered = yaml.safe_load(render_dvc_yaml())
    deps = rendered["stages"]["generate"]["do"]["deps"]
    synthetic = ROOT / "components" / "data" / "synthetic"
    assert {str(p) for p in synthetic.glob("*.py")} <= set(deps)
    assert not any("__pycache__" in d or d == str(synthetic) for d in deps)


def test_root_params_list_the_sources_the_data_section_uses():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["sources"] == used_sources(load_data_params(ROOT / "params.yaml"))
    assert used_sources(SMALL) == ["scenes_vqa", "text"]


def test_used_sources_are_the_ones_with_samples_in_source_order():
    last = SOURCES[-1]  # any family, including ones outside the default corpus
    params = DataParams(splits={"train": {last: 2, "scenes_vqa": 0}, "val": {"scenes_vqa": 1}})
    assert used_sources(params) == ["scenes_vqa", last]
    assert only_source(params, last).splits == {"train": {last: 2}, "val": {last: 0}}


def test_the_workspace_dvc_yaml_points_code_deps_into_the_project():
    spec = yaml.safe_load(render_dvc_yaml())
    deps = spec["stages"]["generate"]["do"]["deps"] + spec["stages"]["validate"]["deps"]
    code = [d for d in deps if d.endswith(".py")]
    assert code and all(Path(d).is_absolute() and Path(d).exists() for d in code)
    assert spec["stages"]["generate"]["foreach"] == "${sources}"


def test_dvc_repro_of_the_shards_matches_generating_all_sources_at_once(tmp_path):
    recipe = load_recipe(ROOT / "configs/micro.yaml").model_copy(
        update={"name": f"dvc-test-{tmp_path.name}", "data": SMALL})
    ws = prepare_workspace(recipe)
    try:
        assert yaml.safe_load((ws / "params.yaml").read_text())["sources"] == ["scenes_vqa", "text"]
        _dvc(ws, "repro", "shards")
        lock = yaml.safe_load((ws / "dvc.lock").read_text())
        assert {"generate@scenes_vqa", "generate@text", "shards"} <= set(lock["stages"])
        generate_corpus(SMALL, tmp_path / "direct", workers=1)
        for sub in ("train", "val", "manifests"):
            cmp = filecmp.dircmp(tmp_path / "direct" / sub, ws / "data" / "shards" / sub)
            assert not (cmp.left_only or cmp.right_only or cmp.diff_files), sub
        assert "Data and pipelines are up to date" in _dvc(ws, "status", "shards").stdout
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@pytest.mark.slow
def test_dvc_repro_alone_in_a_fresh_copy(tmp_path):
    """The project's dvc.yaml, unchanged, with a tiny params.yaml: `dvc repro` runs every stage."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "components", tmp_path / "components",
                    ignore=shutil.ignore_patterns("__pycache__"))
    data = SMALL.model_dump(mode="json")
    data["splits"]["test"] = {"scenes_vqa": 2}
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"data": data, "sources": used_sources(SMALL)}))
    _dvc(tmp_path, "init", "--no-scm", "--quiet")
    _dvc(tmp_path, "repro")
    version = read_version(tmp_path)
    assert {"data/sources/scenes_vqa", "data/sources/text", "data/shards", "data/tokenizer",
            "data/validation.json"} <= set(version.hashes)
    assert version.counts["train"] == {"vqa": 6, "text": 5}
    assert json.loads((tmp_path / "data/validation.json").read_text())["train"]["success"]
    dag = _dvc(tmp_path, "dag", "--mermaid").stdout
    for edge in ("generate@scenes_vqa", "generate@text", "shards", "validate", "tokenizer"):
        assert edge in dag
