"""`vlmforge promote` on a real MLflow registry: every metric printed with the interval of its
paired difference and a verdict, refusals and errors with their exit status, a lost race, and
the deployment files that keep promoting flows apart."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

import registry
import registry.models as models
import registry.promotion as promotion
from components.evaluation.intervals import ItemTable, ratio
from flows.commands.promote import add_promote_parser, gate_from_args, promote_command
from registry.promotion import GateConfig, record_items

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "tiny.yaml")
BASE = [1 if (i * 7) % 10 < 6 else 0 for i in range(300)]  # 60 % right on 300 questions


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-home")


@pytest.fixture
def versions(store: Path, tmp_path: Path, monkeypatch) -> tuple[str, list[str]]:
    """Four registered versions of a fresh model (plain files stand in for the weights)."""
    import uuid

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(models, "CAS_SETTLE_S", 0.0)
    registry.configure(store)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "fake"}')
    name = f"vlm-{uuid.uuid4().hex[:8]}"
    with registry.start_run("train") as run_id:
        return name, [registry.register_hf_model(tmp_path / "model", name, run_id=run_id, tags={})
                      for _ in range(4)]


def score(name: str, version: str, gained: int = 0, lost: int = 0, halluc: int = 0) -> None:
    """Record ``version``'s scores as the evaluate stage does: BASE with ``gained`` wrong answers
    made right and ``lost`` right ones made wrong; ``halluc`` of 300 probes hallucinated."""
    right = list(BASE)
    for i in [i for i, v in enumerate(BASE) if not v][:gained]:
        right[i] = 1
    for i in [i for i, v in enumerate(BASE) if v][:lost]:
        right[i] = 0
    bad = [1] * halluc + [0] * (300 - halluc)
    table = ItemTable("synthetic", [f"q{i}" for i in range(300)], right,
                      {"n": [1] * 300, "right": right, "bad": bad},
                      {"vqa_accuracy": ratio("right", "n"), "hallucination_rate": ratio("bad", "n")},
                      "data-a")
    registry.record_metrics(name, version, {m: table.value(m) for m in table.metrics})
    with registry.start_run("evaluate") as run_id:
        record_items(name, version, table, run_id=run_id, intervals=table.intervals(resamples=200))
    registry.set_version_tags(name, version, {"eval_key": "key-a", "eval_run_id": run_id})


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_promote_parser(parser.add_subparsers(dest="command", required=True))
    code = promote_command(parser.parse_args(["promote", *argv]))
    out = capsys.readouterr()
    return code, out.out, out.err


def row(out: str, metric: str) -> list[str]:
    return next(line for line in out.splitlines() if line.startswith(metric)).split()


def test_promote_prints_every_metric_with_its_interval_and_the_verdict(versions, capsys):
    name, (v1, v2, v3, _) = versions
    base = ["--model", name, "--recipe", TINY]
    score(name, v1)
    score(name, v2, gained=6, lost=3, halluc=1)  # +1 point: inside the noise
    score(name, v3, gained=30, lost=3, halluc=2)  # +9 points: beyond it
    code, out, _ = cli([*base, "--version", v1], capsys)
    assert code == 0 and f"promoted: v{v1} is now 'champion': no champion yet" in out

    code, out, _ = cli([*base, "--version", v2], capsys)
    assert code == 1
    assert (f"{name}: v{v2} against 'champion' (v{v1}); gate: vqa_accuracy gain > 0 (higher is "
            "better) at 95%, paired bootstrap (2000 resamples, seed 0); guarded: "
            "hallucination_rate (tolerance 0, lower is better)") in out
    vqa = row(out, "vqa_accuracy")
    assert vqa[:4] == ["vqa_accuracy", "0.6000", "0.6100", "+0.0100"] and vqa[-1] == "FAIL"
    low, high = float(vqa[4].strip("[,")), float(vqa[5].strip("]"))
    assert low < 0 < high  # the interval holds 0: noise
    assert float(vqa[6]) == pytest.approx(0.508, abs=0.001)  # McNemar: 6 against 3 discordant
    assert row(out, "hallucination_rate")[-1] == "ok"
    assert "not promoted: vqa_accuracy gain +0.0100 (95% CI -0.0" in out and "inside the noise" in out

    code, out, _ = cli([*base, "--version", v3], capsys)
    assert code == 0
    vqa = row(out, "vqa_accuracy")
    assert vqa[:4] == ["vqa_accuracy", "0.6000", "0.6900", "+0.0900"] and vqa[-1] == "pass"
    assert float(vqa[4].strip("[,")) > 0
    assert f"promoted: v{v3} is now 'champion' (was v{v1}): vqa_accuracy gain +0.0900 (95% CI +0.0" \
        in out
    assert registry.get_alias(name, "champion") == v3


def test_promote_errors_and_forced_rollbacks(versions, capsys):
    name, (v1, v2, v3, v4) = versions
    base = ["--model", name, "--recipe", TINY]
    code, _, err = cli([*base, "--version", v4], capsys)
    assert code == 2 and "has no recorded metrics" in err  # never evaluated
    code, _, err = cli([*base, "--version", v4, "--force", "--reason", "trust me"], capsys)
    assert code == 2 and "not even with force" in err
    score(name, v1, gained=30)
    score(name, v2)
    cli([*base, "--version", v1], capsys)
    code, out, _ = cli([*base, "--version", v2, "--dry-run"], capsys)
    assert code == 1 and "the whole interval lies at or below it" in out  # -9 points
    code, _, err = cli([*base, "--version", v2, "--force"], capsys)
    assert code == 2 and "--force needs --reason" in err
    code, out, _ = cli([*base, "--version", v2, "--force", "--reason", "rollback"], capsys)
    assert code == 0 and f"(was v{v1}): forced: rollback" in out
    tags = registry.version_info(name, v2)["tags"]
    assert tags["promotion.forced"] == "true"
    assert json.loads(tags["promotion.gate"])["reason"] == "rollback"
    code, _, err = cli([*base, "--version", "123"], capsys)
    assert code == 2 and "has no version 123" in err
    code, _, err = cli([*base, "--version", "latest"], capsys)
    assert code == 2 and "must be a version number" in err
    code, _, err = cli(["--model", name, "--recipe", "missing.yaml", "--version", v3], capsys)
    assert code == 2 and "recipe 'missing.yaml' not found" in err


def test_a_lost_race_exits_3_and_records_nothing(versions, capsys, monkeypatch):
    name, (v1, v2, v3, _) = versions
    base = ["--model", name, "--recipe", TINY]
    for v, gained in ((v1, 0), (v2, 40), (v3, 50)):
        score(name, v, gained=gained)
    cli([*base, "--version", v1], capsys)
    real_move = promotion.move_alias

    def other_promotion_first(model, alias, version, *, expected):
        if version == v2:
            monkeypatch.setattr(promotion, "move_alias", real_move)
            assert cli([*base, "--version", v3], capsys)[0] == 0
        return real_move(model, alias, version, expected=expected)

    monkeypatch.setattr(promotion, "move_alias", other_promotion_first)
    code, out, _ = cli([*base, "--version", v2], capsys)
    assert code == 3
    assert f"not promoted: lost a race: 'champion' of {name} moved to v{v3} while v{v2}" in out
    assert registry.get_alias(name, "champion") == v3
    assert "promotion.time" not in registry.version_info(name, v2)["tags"]


def test_gate_comes_from_the_recipe_and_overrides_that_tighten_need_no_force():
    parser = argparse.ArgumentParser()
    add_promote_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["promote", "--model", "m", "--version", "1", "--recipe", TINY])
    gate, loosened = gate_from_args(args)
    assert gate == GateConfig("vqa_accuracy", 0.0, {"hallucination_rate": 0.0},
                              ("hallucination_rate", "chair_i", "unparsed")) and loosened == []
    args = parser.parse_args(["promote", "--model", "m", "--version", "1", "--recipe", TINY,
                              "--min-delta", "0.02", "--guard", "ocr_accuracy=0.05",
                              "--guard", "hallucination_rate=0"])
    gate, loosened = gate_from_args(args)
    assert loosened == [] and gate.min_delta == 0.02 and gate.guarded["ocr_accuracy"] == 0.05


@pytest.mark.parametrize("path", ["prefect.yaml", "infra/prefect/docker.yaml",
                                  "infra/prefect/kubernetes.yaml"])
def test_every_promoting_deployment_shares_one_work_queue_of_concurrency_1(path):
    config = yaml.safe_load((ROOT / path).read_text())
    pools = {(d["work_pool"]["name"], d["work_pool"]["work_queue_name"])
             for d in config["deployments"]}
    assert {d["name"] for d in config["deployments"]} == {"pipeline", "evaluate-champion"}
    assert len(pools) == 1  # both promote: the weekly pipeline and the nightly champion run
    pool, queue = pools.pop()
    assert queue == "promotion"
    text = (ROOT / path).read_text()
    assert f"prefect work-queue create {queue} --pool {pool} --limit 1" in text
