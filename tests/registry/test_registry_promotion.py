"""registry.promotion: the pure gate, and promote() against a real registry."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import pytest

import registry
from flows.commands.promote import add_promote_parser, gate_from_args, promote_command
from registry.promotion import Decision, GateConfig, comparison_table, decide

GATE = GateConfig(primary="cider", min_delta=0.01, guarded={"vqa_acc": 0.02})


def test_decide_first_model_is_promoted() -> None:
    d = decide({"cider": 0.5}, None, GATE)
    assert d.promote and d.reason == "no champion yet"
    assert d.rows == [("cider", None, 0.5, None)]


def test_decide_needs_min_delta_on_primary() -> None:
    champion = {"cider": 0.50, "vqa_acc": 0.6}
    assert not decide({"cider": 0.505, "vqa_acc": 0.6}, champion, GATE).promote
    d = decide({"cider": 0.51, "vqa_acc": 0.6}, champion, GATE)  # exactly min_delta passes
    assert d.promote, d.reason
    assert d.rows[0][0] == "cider" and d.rows[0][3] == pytest.approx(0.01)
    assert decide({"cider": 0.5}, {"cider": 0.5}, GateConfig("cider")).promote  # tie at 0


def test_decide_guarded_metric_may_not_drop_too_much() -> None:
    champion = {"cider": 0.5, "vqa_acc": 0.60}
    ok = decide({"cider": 0.6, "vqa_acc": 0.585}, champion, GATE)
    bad = decide({"cider": 0.6, "vqa_acc": 0.57}, champion, GATE)
    missing = decide({"cider": 0.6}, champion, GATE)
    assert ok.promote
    assert not bad.promote and "vqa_acc" in bad.reason
    assert not missing.promote and "vqa_acc" in missing.reason


def test_decide_lower_is_better_and_missing_primary() -> None:
    gate = GateConfig(primary="loss", min_delta=0.1, higher_is_better=False)
    assert decide({"loss": 1.0}, {"loss": 1.2}, gate).promote
    assert not decide({"loss": 1.15}, {"loss": 1.2}, gate).promote
    assert not decide({"other": 1.0}, {"loss": 1.2}, gate).promote


@pytest.fixture
def versions(home: Path, model_name: str, plain_model_dir: Path) -> list[str]:
    with registry.start_run("train") as run_id:
        return [
            registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
            for _ in range(4)
        ]


def test_promotion_flow(model_name: str, versions: list[str]) -> None:
    v1, v2, v3, v4 = versions
    tags = lambda v: registry.version_info(model_name, v)["tags"]  # noqa: E731

    d = registry.promote(model_name, v1, {"cider": 0.50, "vqa_acc": 0.60}, GATE)
    assert d.promote and d.reason == "no champion yet" and d.previous is None
    assert registry.get_alias(model_name, "champion") == v1
    t1 = tags(v1)
    assert t1["promotion.previous"] == "none" and t1["promotion.reason"] == "no champion yet"
    assert datetime.fromisoformat(t1["promotion.time"]).tzinfo is not None
    assert t1["metric.cider"] == "0.5"

    # improvement below min_delta: refused, nothing moves
    d = registry.promote(model_name, v2, {"cider": 0.505, "vqa_acc": 0.60}, GATE)
    assert not d.promote and "min_delta" in d.reason and d.previous == v1
    assert registry.get_alias(model_name, "champion") == v1
    assert "promotion.reason" not in tags(v2)

    # guarded regression: refused
    registry.record_metrics(model_name, v3, {"cider": 0.60, "vqa_acc": 0.50})
    d = registry.promote(model_name, v3, None, GATE)
    assert not d.promote and "vqa_acc" in d.reason

    # dry run of a passing candidate changes nothing
    d = registry.promote(model_name, v4, {"cider": 0.60, "vqa_acc": 0.61}, GATE, dry_run=True)
    assert d.promote and registry.get_alias(model_name, "champion") == v1
    assert "metric.cider" not in tags(v4)

    d = registry.promote(model_name, v4, {"cider": 0.60, "vqa_acc": 0.61}, GATE)
    assert d.promote and registry.get_alias(model_name, "champion") == v4
    t4 = tags(v4)
    assert t4["promotion.previous"] == v1 and t4["promotion.forced"] == "false"
    assert json.loads(t4["promotion.diff"]) == pytest.approx({"cider": 0.10, "vqa_acc": 0.01})

    # the current champion is not promoted again
    assert not registry.promote(model_name, v4, None, GATE).promote

    # force needs a reason, then overrides the gate (e.g. a rollback)
    with pytest.raises(ValueError, match="reason"):
        registry.promote(model_name, v3, None, GATE, force=True)
    d = registry.promote(model_name, v3, None, GATE, force=True, reason="rollback: v4 broke OCR")
    assert d.promote and d.forced and d.previous == v4
    assert registry.get_alias(model_name, "champion") == v3
    t3 = tags(v3)
    assert t3["promotion.reason"] == "forced: rollback: v4 broke OCR"
    assert t3["promotion.forced"] == "true" and t3["promotion.previous"] == v4


def test_promotion_refuses_version_without_metrics(model_name: str, versions: list[str]) -> None:
    with pytest.raises(ValueError, match="no recorded metrics"):
        registry.promote(model_name, versions[0], None, GATE)
    with pytest.raises(ValueError, match="no recorded metrics"):
        registry.promote(model_name, versions[0], None, GATE, force=True, reason="because")
    assert registry.get_alias(model_name, "champion") is None


def test_record_metrics_rejects_nan(model_name: str, versions: list[str]) -> None:
    with pytest.raises(ValueError, match="not finite"):
        registry.record_metrics(model_name, versions[0], {"cider": float("nan")})
    registry.record_metrics(model_name, versions[0], {"cider": 1 / 3})
    assert registry.read_metrics(model_name, versions[0]) == {"cider": 1 / 3}  # exact round trip


def test_decision_is_a_plain_value() -> None:
    d = Decision(True, "x")
    assert d.rows == [] and d.previous is None and not d.forced


# ------------------------------------------------------------------ verdicts, records, the CLI

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_decide_gives_a_verdict_per_metric() -> None:
    champion = {"cider": 0.5, "vqa_acc": 0.60, "ocr": 0.3, "old_only": 1.0}
    d = decide({"cider": 0.6, "vqa_acc": 0.57, "ocr": 0.1, "pope_f1": 0.4}, champion,
               GateConfig("cider", 0.01, {"vqa_acc": 0.02, "pope_f1": 0.05}))
    assert not d.promote
    assert d.verdicts == {"cider": "pass", "vqa_acc": "FAIL", "ocr": "-", "old_only": "-",
                          "pope_f1": "new"}
    assert decide({"cider": 0.505}, champion, GATE).verdicts["cider"] == "FAIL"
    assert decide({"cider": 0.6}, champion, GATE).verdicts["vqa_acc"] == "missing"
    assert decide({"cider": 0.6, "vqa_acc": 0.59}, champion, GATE).verdicts["vqa_acc"] == "ok"
    assert decide({"cider": 0.5}, None, GATE).verdicts == {"cider": "new"}


def test_comparison_table_lists_metric_champion_candidate_delta_verdict() -> None:
    d = decide({"cider": 0.6, "vqa_acc": 0.61, "ocr": 0.2}, {"cider": 0.5, "vqa_acc": 0.6}, GATE)
    d = Decision(d.promote, d.reason, d.rows, previous="3", verdicts=d.verdicts)
    lines = comparison_table(d, "4").splitlines()
    assert lines[0].split() == ["metric", "champion", "v3", "candidate", "v4", "delta", "verdict"]
    assert lines[2].split() == ["cider", "0.5000", "0.6000", "+0.1000", "pass"]  # primary first
    assert lines[3].split() == ["ocr", "-", "0.2000", "-", "-"]
    assert lines[4].split() == ["vqa_acc", "0.6000", "0.6100", "+0.0100", "ok"]


def test_every_alias_move_is_recorded_on_both_versions(model_name: str, versions: list[str]) -> None:
    v1, v2, _, _ = versions
    tags = lambda v: registry.version_info(model_name, v)["tags"]  # noqa: E731
    registry.promote(model_name, v1, {"cider": 0.5, "vqa_acc": 0.6}, GATE)
    registry.promote(model_name, v2, {"cider": 0.7, "vqa_acc": 0.6}, GATE)
    t1, t2 = tags(v1), tags(v2)
    assert t1["demotion.replaced_by"] == v2 and t1["demotion.alias"] == "champion"
    assert t1["demotion.reason"] == t2["promotion.reason"] == "cider improved by +0.2"
    assert t1["demotion.time"] == t2["promotion.time"]
    h1, h2 = json.loads(t1["alias_history"]), json.loads(t2["alias_history"])
    assert [e["event"] for e in h1] == ["promoted", "replaced"] and h1[1]["by"] == v2
    assert h2 == [{"time": t2["promotion.time"], "alias": "champion",
                   "reason": "cider improved by +0.2", "forced": False, "event": "promoted",
                   "previous": v1}]
    # a rollback appends to the history of both
    registry.promote(model_name, v1, None, GATE, force=True, reason="rollback")
    assert [e["event"] for e in json.loads(tags(v1)["alias_history"])] == [
        "promoted", "replaced", "promoted"]
    assert [e["event"] for e in json.loads(tags(v2)["alias_history"])] == ["promoted", "replaced"]
    assert registry.get_alias(model_name, "champion") == v1


def test_unknown_version_is_a_clear_error(model_name: str, versions: list[str]) -> None:
    with pytest.raises(LookupError, match=f"model '{model_name}' has no version 99"):
        registry.promote(model_name, "99", {"cider": 1.0}, GATE)


def _promote_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="vlmforge")
    add_promote_parser(parser.add_subparsers(dest="command", required=True))
    code = promote_command(parser.parse_args(["promote", *argv]))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_promote_cli(model_name: str, versions: list[str], capsys) -> None:
    v1, v2, v3, v4 = versions
    gate = ["--recipe", str(CONFIGS / "tiny.yaml"), "--primary", "cider", "--min-delta", "0.01",
            "--guard", "vqa_acc=0.02"]
    base = ["--model", model_name, *gate]

    code, _, err = _promote_cli([*base, "--version", v4], capsys)
    assert code == 2 and "has no recorded metrics" in err  # never evaluated
    code, _, err = _promote_cli([*base, "--version", v4, "--force", "--reason", "trust me"], capsys)
    assert code == 2 and "not even with force" in err
    assert registry.get_alias(model_name, "champion") is None

    registry.record_metrics(model_name, v1, {"cider": 0.5, "vqa_acc": 0.6})
    registry.record_metrics(model_name, v2, {"cider": 0.6, "vqa_acc": 0.55})
    registry.record_metrics(model_name, v3, {"cider": 0.6, "vqa_acc": 0.61})
    code, out, _ = _promote_cli([*base, "--version", v1], capsys)
    assert code == 0 and f"promoted: v{v1} is now 'champion'" in out
    assert "gate: cider +0.01, guarded: vqa_acc -0.02" in out

    code, out, _ = _promote_cli([*base, "--version", v2], capsys)  # guarded metric drops 0.05
    assert code == 1 and "not promoted: guarded metric vqa_acc dropped" in out
    table = out.splitlines()
    row = next(line for line in table if line.startswith("vqa_acc"))
    assert row.split() == ["vqa_acc", "0.6000", "0.5500", "-0.0500", "FAIL"]

    code, out, _ = _promote_cli([*base, "--version", v3, "--dry-run"], capsys)
    assert code == 0 and "dry run: would promote" in out
    assert next(line for line in out.splitlines() if line.startswith("cider")).split()[-1] == "pass"
    assert registry.get_alias(model_name, "champion") == v1
    assert "promotion.reason" not in registry.version_info(model_name, v3)["tags"]

    code, _, err = _promote_cli([*base, "--version", v2, "--force"], capsys)
    assert code == 2 and "--force needs --reason" in err
    code, out, _ = _promote_cli([*base, "--version", v2, "--force", "--reason", "hotfix"], capsys)
    assert code == 0 and f"(was v{v1}): forced: hotfix" in out
    tags = registry.version_info(model_name, v2)["tags"]
    assert tags["promotion.forced"] == "true" and tags["promotion.previous"] == v1
    assert json.loads(tags["promotion.diff"]) == pytest.approx({"cider": 0.1, "vqa_acc": -0.05})

    code, _, err = _promote_cli([*base, "--version", "123"], capsys)
    assert code == 2 and "has no version 123" in err
    code, _, err = _promote_cli([*base, "--version", "latest"], capsys)
    assert code == 2 and "must be a version number" in err
    with pytest.raises(SystemExit):
        _promote_cli([*base, "--version", v3, "--guard", "vqa_acc"], capsys)


def test_gate_comes_from_the_recipe_unless_overridden() -> None:
    parser = argparse.ArgumentParser()
    add_promote_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["promote", "--model", "m", "--version", "1", "--recipe",
                              str(CONFIGS / "tiny.yaml")])
    assert gate_from_args(args) == GateConfig("vqa_accuracy", 0.0, {})
    args = parser.parse_args(["promote", "--model", "m", "--version", "1", "--recipe",
                              "missing.yaml", "--primary", "x"])
    with pytest.raises(ValueError, match="recipe 'missing.yaml' not found"):
        gate_from_args(args)
