"""Scheduling: the deployment files, `vlmforge schedule`, and a real Prefect server whose
scheduler starts a served flow on its interval until a run completes."""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flows.commands.schedule import FLOWS, add_schedule_parser
from flows.commands.ui import (
    free_port,
    prefect_server_env,
    start_prefect_server,
    stop,
    wait_until_ready,
)

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENT_FILES = [ROOT / "prefect.yaml", ROOT / "infra/prefect/docker.yaml",
                    ROOT / "infra/prefect/kubernetes.yaml"]
SERVER_START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 180


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_schedule_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.name)
def test_deployment_files_schedule_the_pipeline_weekly_and_the_champion_nightly(path):
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint

    config = PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))
    by_name = {d.name: d for d in config.deployments}
    assert set(by_name) == {"pipeline", "evaluate-champion"}
    assert by_name["pipeline"].schedules[0].cron.endswith("* * 0")  # weekly
    assert by_name["evaluate-champion"].schedules[0].cron.endswith("* * *")  # nightly
    pools = {d.work_pool.name for d in config.deployments}
    assert len(pools) == 1 and pools.pop().startswith("vlmforge-")
    for d in config.deployments:
        file, _, name = d.entrypoint.partition(":")
        flow = load_flow_from_entrypoint(str(ROOT / file) + ":" + name)
        flow.validate_parameters(d.parameters)  # the parameters fit the flow's signature
        assert (ROOT / d.parameters["recipe_path"]).is_file()
        schema = flow.parameters.model_dump()["properties"]
        assert {"recipe_path", "recipe", "force"} <= set(schema)  # the UI's form
        # a served run validates its parameters in a fresh process: string annotations
        # (`from __future__ import annotations`) fail there with "Recipe is not defined"
        signature = inspect.signature(flow.fn).parameters
        assert not any(isinstance(p.annotation, str) for p in signature.values())


def test_schedule_command_serves_the_chosen_flow_with_its_parameters(monkeypatch, tmp_path):
    import contextlib

    import flows.commands.schedule as schedule
    import flows.commands.ui

    served = {}
    monkeypatch.setenv("VLMFORGE_HOME", os.environ["VLMFORGE_HOME"])  # restored afterwards

    @contextlib.contextmanager
    def no_server(port, home_env=None):
        yield f"http://127.0.0.1:{port}/api"

    monkeypatch.setattr(flows.commands.ui, "prefect_api", no_server)
    monkeypatch.setattr(schedule, "serve_flow", lambda flow, **kw: served.update(flow=flow, **kw))
    args = _parser().parse_args(["schedule", "--cron", "0 3 * * *", "--flow", "evaluate",
                                 "--recipe", str(ROOT / "configs/micro.yaml")])
    assert args.func(args) == 0
    assert served["flow"].name == "evaluate-champion"
    assert served["name"] == "evaluate-champion-micro"
    assert served["cron"] == "0 3 * * *" and served["interval"] is None
    assert served["parameters"] == {"recipe_path": str(ROOT / "configs/micro.yaml"),
                                    "force": False, "model": "champion"}
    assert set(FLOWS) == {"pipeline", "evaluate"}


def test_schedule_command_needs_one_cron_or_interval(capsys):
    for argv in (["schedule", "--recipe", "r.yaml"],
                 ["schedule", "--cron", "0 3 * * *", "--interval", "60", "--recipe", "r.yaml"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
    assert "--cron" in capsys.readouterr().err


TINY_FLOW = textwrap.dedent("""
    from prefect import flow

    @flow(name="tick")
    def tick(word: str = "tick") -> str:
        return word.upper()
""")

SERVE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from tiny_flows import tick
    from flows.commands.schedule import serve_flow
    serve_flow(tick, name="every-few-seconds", interval=3, parameters={"word": "tock"})
""")


def _server_env(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING", DO_NOT_TRACK="true",
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
                PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1")
    return base


@pytest.mark.slow  # a second Prefect server and a real schedule: ~1 min (make test-slow)
def test_a_served_flow_runs_on_its_interval_schedule_on_a_real_server(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _server_env(tmp_path / "prefect-home")
    (tmp_path / "tiny_flows.py").write_text(TINY_FLOW)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_prefect_server(port, env, ui=False))
        assert prefect_server_env(port, env, ui=False)["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
        assert wait_until_ready([f"{api}/health"], procs, SERVER_START_TIMEOUT_S), "no server"
        serve_env = dict(env, PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="1")
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], env=serve_env,
                                      cwd=tmp_path, start_new_session=True))
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            deadline, done = time.monotonic() + RUN_TIMEOUT_S, []
            while not done and time.monotonic() < deadline:
                assert procs[-1].poll() is None, "the serving process exited"
                runs = c.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["every-few-seconds"])))
                done = [r for r in runs if r.state is not None and r.state.is_completed()]
                time.sleep(1)
            assert done, f"no completed run; states: {[r.state_name for r in runs]}"
            run = done[0]
            assert run.auto_scheduled  # created by the server's scheduler, not by hand
            assert run.parameters == {"word": "tock"}
            assert c.read_deployment(run.deployment_id).schedules[0].active

            # prefect.yaml's deployments land on the same server, pull step -> the repository
            deploy_env = dict(env, PREFECT_API_URL=api, PWD=str(ROOT))
            prefect = str(Path(sys.executable).parent / "prefect")
            for cmd in ([prefect, "work-pool", "create", "vlmforge-local", "--type", "process"],
                        [prefect, "--no-prompt", "deploy", "--all"]):
                out = subprocess.run(cmd, cwd=ROOT, env=deploy_env, capture_output=True, text=True)
                assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            for full_name, cron in (("run-recipe/pipeline", "0 2 * * 0"),
                                    ("evaluate-champion/evaluate-champion", "0 3 * * *")):
                d = c.read_deployment_by_name(full_name)
                assert d.work_pool_name == "vlmforge-local"
                assert d.schedules[0].schedule.cron == cron and d.schedules[0].active
                assert d.parameters["recipe_path"] == "configs/tiny.yaml"
                assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                         {"directory": str(ROOT)}}]
    finally:
        stop(list(reversed(procs)))  # SIGINT to each process group, SIGKILL what is left
    assert all(p.poll() is not None for p in procs)
