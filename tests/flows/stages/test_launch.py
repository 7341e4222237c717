"""flows.stages.launch: the accelerate-launch Prefect task streams the children's output into
its log and fails on a non-zero exit; ranks are read from torchrun's variables."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import pytest

from components.training import distributed
from flows.stages.launch import LaunchError, child_env, run_streaming, stage_target

ROOT = Path(__file__).resolve().parents[3]


def test_run_streaming_passes_both_streams_line_by_line():
    lines: list[str] = []
    code = "import sys\nprint('out 1', flush=True)\nprint('err 1', file=sys.stderr, flush=True)\nprint('out 2')"
    assert run_streaming([sys.executable, "-c", code], lines.append) == 0
    assert lines.count("out 1") == 1 and "out 2" in lines and "[stderr] err 1" in lines


def test_run_streaming_raises_with_the_tail_on_failure():
    code = "import sys\nprint('about to fail')\nsys.exit(3)"
    with pytest.raises(LaunchError, match=r"exited with 3(.|\n)*about to fail"):
        run_streaming([sys.executable, "-c", code], lambda line: None)


@pytest.mark.parametrize("env,rank,main", [({}, 0, True), ({"RANK": "0", "WORLD_SIZE": "2"}, 0, True),
                                           ({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, 1, False)])
def test_rank_detection(monkeypatch, env, rank, main):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.process_rank() == rank and distributed.is_main_process() is main
    assert distributed.world_size() == int(env.get("WORLD_SIZE", 1))


def test_child_env_drops_inherited_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "1234")
    env = child_env({"EXTRA": "x"})
    assert "RANK" not in env and "MASTER_PORT" not in env and env["EXTRA"] == "x"
    assert str(ROOT) in env["PYTHONPATH"].split(":")


def test_stage_target_and_launch_command():
    target = stage_target("configs/tiny.yaml", "sft", force=True)
    assert target == ["-m", "flows.stages.launch", "stage", "--recipe", "configs/tiny.yaml", "--kind", "sft",
                      "--force"]
    cmd = distributed.launch_command(target, 4, config_file="infra/accelerate/fsdp.yaml", cpu=False)
    assert cmd[1:3] == ["-m", "components.training.distributed"]
    assert cmd[3:7] == ["--config_file", "infra/accelerate/fsdp.yaml", "--num_processes", "4"]
    assert cmd[-len(target):] == target


@pytest.mark.slow  # 2 launched processes, ~25 s (make test-slow)
def test_launch_task_runs_two_ranks_and_fails_the_task_on_error(tmp_path):
    from prefect import flow

    from flows.stages.launch import accelerate_launch

    script = tmp_path / "rank.py"
    # one write per line: workers run `python -u`, and print() writes text and newline apart
    script.write_text("import os, sys\nsys.stdout.write('hello from rank %s\\n' % os.environ['RANK'])\n"
                      "assert os.environ['PREFECT_API_URL'].startswith('http://127.0.0.1:')\n"
                      "sys.exit(int(os.environ.get('FAIL_RANK', '-1')) == int(os.environ['RANK']))\n")

    @flow
    def launched(fail: bool) -> int:
        return accelerate_launch([str(script)], 2, env={"FAIL_RANK": "1"} if fail else None)

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    task_logger = logging.getLogger("prefect.task_runs")
    level = task_logger.level
    task_logger.addHandler(handler)
    task_logger.setLevel(logging.INFO)  # the test session sets Prefect's logging to WARNING
    try:
        assert launched(False) == 0
    finally:
        task_logger.removeHandler(handler)
        task_logger.setLevel(level)
    assert {"hello from rank 0", "hello from rank 1"} <= set(seen)  # streamed into the task's log
    with pytest.raises(LaunchError, match="exited with"):
        launched(True)


def _launch_recipe(tmp_path: Path, name: str = "micro-launch") -> Path:
    """The micro recipe under its own names, its SFT stage validating every step (eval_every
    is a monitoring setting: rank 0 and the follower must still agree on the stage's key)."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    raw.update(name=name, registered_model=f"vlm-{name}")
    raw["backbones"]["vision"]["registered_model"] = f"vision-{name}"
    raw["backbones"]["text"]["registered_model"] = f"lm-{name}"
    raw["model"].update(vision=f"registered:vision-{name}", text=f"registered:lm-{name}")
    sft = next(s for s in raw["stages"] if s["kind"] == "sft")
    sft["train"].update(eval_every=1, checkpoint_every=2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow  # 2 launched processes through a whole SFT stage, ~50 s (make test-slow)
def test_launched_sft_with_eval_every_registers_under_the_key_both_ranks_compute(tmp_path):
    """micro recipe: data, backbones and pretrain inline, then an SFT stage with eval_every on
    2 gloo ranks. On main before the fix the follower keyed the stage with eval_every in it,
    waited for a version rank 0 never tagged, and failed after wait_s."""
    import registry
    from components.recipe import load_recipe, stage_cache_key
    from flows.cli import main as cli
    from flows.stages.data import current_data
    from flows.stages.launch import launch_stage

    path = _launch_recipe(tmp_path)
    assert cli(["pretrain", "--recipe", str(path)]) != 0  # no data or backbones yet: refused
    assert cli(["backbones", "--recipe", str(path)]) == 0
    assert cli(["pretrain", "--recipe", str(path)]) == 0
    recipe = load_recipe(path)
    assert launch_stage(str(path), "sft", 2, force=True, wait_s=240) == 0
    versions = registry.list_versions(recipe.registered_model)
    sft = recipe.stages_of("sft")[0]
    assert [v["tags"]["stage"] for v in versions] == [*(s.name for s in recipe.stages_of("pretrain")), sft.name]
    parent = versions[-1]["tags"]["parent_version"]
    key = stage_cache_key(recipe, sft, parent, current_data(recipe).version)
    assert versions[-1]["tags"]["cache_key"] == key
    from mlflow import MlflowClient

    client = MlflowClient()
    steps = [m.step for m in client.get_metric_history(versions[-1]["run_id"], "loss")]
    assert steps == sorted(set(steps))  # logged by rank 0 only: no step twice
    val = [m.step for m in client.get_metric_history(versions[-1]["run_id"], "val_loss")]
    assert val == list(range(1, sft.train.steps + 1))


@pytest.mark.slow
def test_launched_pretrain_on_two_processes_registers_each_stage_once(tmp_path):
    """micro recipe: data + backbones inline, then both pretrain stages on 2 gloo ranks."""
    import registry
    from components.recipe import load_recipe
    from flows.cli import main as cli
    from flows.stages.launch import launch_stage

    path = _launch_recipe(tmp_path)
    assert cli(["backbones", "--recipe", str(path)]) == 0
    recipe = load_recipe(path)
    try:
        before = len(registry.list_versions(recipe.registered_model))
    except Exception:  # noqa: BLE001 - no such registered model yet
        before = 0
    # force: another test of the session may have trained (and cached) these stages already
    assert launch_stage(str(path), "pretrain", 2, force=True, wait_s=240) == 0
    new = registry.list_versions(recipe.registered_model)[before:]
    assert [v["tags"]["stage"] for v in new] == [s.name for s in recipe.stages_of("pretrain")]
    assert new[1]["tags"]["parent_version"] == new[0]["version"]
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(new[0]["run_id"], "loss")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps))  # logged by rank 0 only: no step twice


@pytest.mark.slow
def test_pipeline_launches_each_training_stage_and_registers_it_once(tmp_path):
    """`vlmforge run --launcher accelerate`: data, backbones and evaluation inline, each
    training stage on 2 gloo ranks nested under the pipeline's run, one version each."""
    import registry
    from components.recipe import load_recipe
    from flows.cli import main as cli

    path = _launch_recipe(tmp_path, "micro-pipeline-launch")
    assert cli(["run", "--recipe", str(path), "--launcher", "accelerate", "--num-processes", "2"]) == 0
    recipe = load_recipe(path)
    versions = registry.list_versions(recipe.registered_model)
    assert [v["tags"]["stage"] for v in versions] == [s.name for s in recipe.stages]
    for before, after in itertools.pairwise(versions):
        assert after["tags"]["parent_version"] == before["version"]
    from mlflow import MlflowClient

    client = MlflowClient()
    parents = {client.get_run(v["run_id"]).data.tags["mlflow.parentRunId"] for v in versions}
    assert len(parents) == 1
    pipeline_run = client.get_run(parents.pop())
    assert pipeline_run.data.tags["final_version"] == versions[-1]["version"]  # evaluated after
    steps = [m.step for m in client.get_metric_history(versions[0]["run_id"], "loss")]
    assert steps == sorted(set(steps))  # logged by rank 0 only: no step twice
