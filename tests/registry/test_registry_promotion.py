"""registry.promotion: the pure gate, and promote() against a real registry."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import registry
from registry.promotion import Decision, GateConfig, decide

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
