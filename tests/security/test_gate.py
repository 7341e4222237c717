"""The promotion gate cannot be loosened quietly: every override that loosens the recipe's gate
needs --force and --reason (and is recorded), non-finite numbers never pass, and the issue's
case (v1 of the tiny pipeline over its champion with --min-delta -1) is refused."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pytest

import registry
import registry.models as models
from components.evaluation.intervals import ItemTable, ratio
from flows.commands.promote import add_promote_parser, promote_command
from registry.promotion import record_items

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
N = 300


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-home")


def score(name: str, version: str, right: int, halluc: int) -> None:
    """``right`` of N questions answered right, ``halluc`` of N probes hallucinated."""
    cols = {"n": [1] * N, "right": [1] * right + [0] * (N - right),
            "bad": [1] * halluc + [0] * (N - halluc)}
    table = ItemTable("synthetic", [f"q{i}" for i in range(N)], cols["right"], cols,
                      {"vqa_accuracy": ratio("right", "n"), "hallucination_rate": ratio("bad", "n")},
                      "data-a")
    registry.record_metrics(name, version, {m: table.value(m) for m in table.metrics})
    with registry.start_run("evaluate") as run_id:
        record_items(name, version, table, run_id=run_id, intervals=table.intervals(resamples=100))
    registry.set_version_tags(name, version, {"eval_key": "key-a", "eval_run_id": run_id})


@pytest.fixture
def tiny_like(store: Path, tmp_path: Path, monkeypatch) -> tuple[str, str, str]:
    """A champion at VQA 0.68 / hallucination 0.20 and a candidate like the tiny pipeline's
    first version: VQA 0.36, hallucination 0.36."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(models, "CAS_SETTLE_S", 0.0)
    registry.configure(store)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "fake"}')
    name = f"vlm-{uuid.uuid4().hex[:8]}"
    with registry.start_run("train") as run_id:
        champion, candidate = (registry.register_hf_model(tmp_path / "m", name, run_id=run_id,
                                                          tags={}) for _ in range(2))
    score(name, champion, 204, 60)
    score(name, candidate, 108, 108)
    registry.set_alias(name, "champion", champion)
    return name, champion, candidate


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_promote_parser(parser.add_subparsers(dest="command", required=True))
    try:
        code = promote_command(parser.parse_args(["promote", *argv]))
    except SystemExit as exc:  # argparse refused the value itself
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


LOOSENING = {
    "--min-delta -1": (["--min-delta", "-1"], "min_delta 0 -> -1"),
    "--guard wider": (["--guard", "hallucination_rate=0.5"],
                      "guard hallucination_rate tolerance 0 -> 0.5"),
    "--lower-is-better": (["--lower-is-better"], "vqa_accuracy: lower is better"),
    "--primary other": (["--primary", "hallucination_rate"],
                        "primary metric vqa_accuracy -> hallucination_rate"),
}


@pytest.mark.parametrize("flag", sorted(LOOSENING))
def test_each_loosening_flag_without_force_is_refused(tiny_like, flag, capsys):
    name, champion, candidate = tiny_like
    extra, says = LOOSENING[flag]
    code, out, err = cli(["--model", name, "--recipe", TINY, "--version", candidate, *extra],
                         capsys)
    assert code == 2 and out == ""
    assert f"loosen the recipe's gate ({says}" in err and "needs --force --reason" in err
    code, _, err = cli(["--model", name, "--recipe", TINY, "--version", candidate, *extra,
                        "--dry-run"], capsys)
    assert code == 2  # not even to look
    assert registry.get_alias(name, "champion") == champion
    assert "promotion.reason" not in registry.version_info(name, candidate)["tags"]


@pytest.mark.parametrize("extra", [["--min-delta", "nan"], ["--min-delta=-inf"],
                                   ["--guard", "hallucination_rate=nan"],
                                   ["--guard", "hallucination_rate=inf"],
                                   ["--guard", "hallucination_rate=-1"]])
def test_non_finite_or_negative_thresholds_are_refused(tiny_like, extra, capsys):
    name, champion, candidate = tiny_like
    code, _, err = cli(["--model", name, "--recipe", TINY, "--version", candidate, *extra], capsys)
    assert code == 2 and "finite" in err
    assert registry.get_alias(name, "champion") == champion


def test_the_issues_case_the_gate_alone_refuses_and_force_records_everything(tiny_like, capsys):
    name, champion, candidate = tiny_like
    base = ["--model", name, "--recipe", TINY, "--version", candidate]
    code, out, _ = cli(base, capsys)
    assert code == 1 and "vqa_accuracy gain -0.3200" in out and "at or below it" in out
    code, out, _ = cli([*base, "--min-delta", "-1", "--guard", "hallucination_rate=1", "--force",
                        "--reason", "demo of a forced rollback"], capsys)
    assert code == 0
    assert ("gate loosened, forced: min_delta 0 -> -1; guard hallucination_rate tolerance 0 -> 1"
            in out)
    tags = registry.version_info(name, candidate)["tags"]
    assert tags["promotion.forced"] == "true"
    gate = json.loads(tags["promotion.gate"])
    assert gate["min_delta"] == -1 and gate["guarded"] == {"hallucination_rate": 1.0}
    assert gate["forced"] and gate["reason"] == "demo of a forced rollback"
    assert gate["loosened"] == ["min_delta 0 -> -1", "guard hallucination_rate tolerance 0 -> 1"]


def test_a_nan_metric_never_passes(tiny_like, capsys):
    name, champion, candidate = tiny_like
    registry.set_version_tags(name, candidate, {"metric.vqa_accuracy": "nan"})
    code, out, _ = cli(["--model", name, "--recipe", TINY, "--version", candidate], capsys)
    assert code == 1 and "candidate metric vqa_accuracy is not finite (nan)" in out
    registry.set_version_tags(name, candidate, {"metric.vqa_accuracy": "0.9",
                                                "metric.hallucination_rate": "inf"})
    code, out, _ = cli(["--model", name, "--recipe", TINY, "--version", candidate], capsys)
    assert code == 1 and "hallucination_rate is not finite (inf)" in out
    with pytest.raises(ValueError, match="not finite"):
        registry.record_metrics(name, candidate, {"vqa_accuracy": float("nan")})
    assert registry.get_alias(name, "champion") == champion
