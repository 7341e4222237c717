"""registry.promotion: the pure gate with intervals, and promote() against a real registry:
per-item scores paired by key, the data-version check, compare-and-swap alias moves."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest

import registry
import registry.models as models
import registry.promotion as promotion
from components.evaluation.intervals import Interval, ItemTable, ratio
from components.recipe import Evaluation, load_recipe
from registry.promotion import (
    Decision,
    GateConfig,
    comparison_table,
    decide,
    gate_from_recipe,
    loosenings,
    read_items,
    record_items,
)

GATE = GateConfig(primary="cider", min_delta=0.01, guarded={"vqa_acc": 0.02})
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def ci(low: float, high: float, estimate: float | None = None) -> Interval:
    return Interval((low + high) / 2 if estimate is None else estimate, low, high)


# ---------------------------------------------------------------------------- the pure gate


def test_decide_first_model_is_promoted() -> None:
    d = decide({"cider": 0.5}, None, GATE)
    assert d.promote and d.reason == "no champion yet"
    assert d.rows == [("cider", None, 0.5, None, None, None, None)]
    assert d.verdicts == {"cider": "new"}


def test_primary_must_clear_min_delta_beyond_its_interval() -> None:
    champion, candidate = {"cider": 0.50, "vqa_acc": 0.6}, {"cider": 0.56, "vqa_acc": 0.6}
    inside = decide(candidate, champion, GATE, {"cider": ci(-0.01, 0.13, 0.06)})
    assert not inside.promote and inside.verdicts["cider"] == "FAIL"
    assert inside.reason == ("cider gain +0.0600 (95% CI -0.0100 .. +0.1300) is not above min_delta "
                             "0.01: inside the noise")
    beyond = decide(candidate, champion, GATE, {"cider": ci(0.02, 0.10, 0.06)})
    assert beyond.promote and beyond.verdicts["cider"] == "pass"
    assert beyond.reason == "cider gain +0.0600 (95% CI +0.0200 .. +0.1000) is above min_delta 0.01"
    # the interval's low end must be above min_delta, not at it: identical models never pass
    same = decide(champion, champion, GateConfig("cider"), {"cider": ci(0.0, 0.0)})
    assert not same.promote and "inside the noise" not in same.reason
    unpaired = decide(candidate, champion, GATE)
    assert not unpaired.promote and "no paired per-item scores" in unpaired.reason


def test_a_guarded_metric_fails_only_when_its_whole_drop_interval_passes_the_tolerance() -> None:
    champion = {"cider": 0.5, "vqa_acc": 0.60}
    gain = {"cider": ci(0.05, 0.15)}
    noisy = decide({"cider": 0.6, "vqa_acc": 0.57}, champion, GATE,
                   {**gain, "vqa_acc": ci(-0.07, 0.01, -0.03)})  # drop in [-0.01, 0.07]
    assert noisy.promote and noisy.verdicts["vqa_acc"] == "ok"
    bad = decide({"cider": 0.6, "vqa_acc": 0.50}, champion, GATE,
                 {**gain, "vqa_acc": ci(-0.14, -0.06, -0.10)})  # drop in [0.06, 0.14] > 0.02
    assert not bad.promote and bad.verdicts["vqa_acc"] == "FAIL"
    assert bad.reason == ("guarded metric vqa_acc worsened by 0.1000 (95% CI +0.0600 .. +0.1400), "
                          "beyond its tolerance 0.02")
    point = decide({"cider": 0.6, "vqa_acc": 0.57}, champion, GATE, gain)  # no items: point-wise
    assert not point.promote and "point comparison" in point.reason
    missing = decide({"cider": 0.6}, champion, GATE, gain)
    assert not missing.promote and missing.verdicts["vqa_acc"] == "missing"


def test_lower_is_better_turns_gains_and_drops_around() -> None:
    gate = GateConfig("loss", 0.1, {"hallucination_rate": 0.0},
                      lower_is_better=("loss", "hallucination_rate"))
    champion = {"loss": 1.2, "hallucination_rate": 0.20}
    ok = decide({"loss": 1.0, "hallucination_rate": 0.21}, champion, gate,
                {"loss": ci(-0.3, -0.15), "hallucination_rate": ci(-0.02, 0.04)})
    assert ok.promote, ok.reason
    worse = decide({"loss": 1.0, "hallucination_rate": 0.30}, champion, gate,
                   {"loss": ci(-0.3, -0.15), "hallucination_rate": ci(0.05, 0.15)})
    assert not worse.promote and "hallucination_rate worsened by 0.1000" in worse.reason
    assert gate.lower("pope_random_hallucination_rate") and not gate.lower("rate")


def test_non_finite_metrics_and_gates_are_refused() -> None:
    nan = float("nan")
    d = decide({"cider": nan}, None, GATE)
    assert not d.promote and d.reason.startswith("candidate metric cider is not finite (nan)")
    d = decide({"cider": 0.9, "vqa_acc": 0.6}, {"cider": 0.5, "vqa_acc": math.inf}, GATE,
               {"cider": ci(0.3, 0.5)})
    assert not d.promote and "champion metric vqa_acc is not finite" in d.reason
    for bad in ({"min_delta": nan}, {"min_delta": -math.inf}, {"guarded": {"x": nan}},
                {"guarded": {"x": -0.1}}, {"confidence": 1.0}):
        with pytest.raises(ValueError):
            GateConfig("cider", **bad)
    with pytest.raises(ValueError):
        Evaluation(min_delta=nan)
    with pytest.raises(ValueError):
        Evaluation(guarded={"hallucination_rate": nan})


def test_the_default_gate_guards_hallucination_and_every_suites_primary_score() -> None:
    assert gate_from_recipe(Evaluation()) == GateConfig(
        "vqa_accuracy", 0.0, {"hallucination_rate": 0.0},
        ("hallucination_rate", "chair_i", "unparsed"))
    tiny = gate_from_recipe(load_recipe(CONFIGS / "tiny.yaml").evaluate)
    assert tiny == gate_from_recipe(Evaluation())
    byod = gate_from_recipe(load_recipe(CONFIGS / "byod-example.yaml").evaluate)
    assert byod.primary == "vqa_val_accuracy"
    assert byod.guarded == {"hallucination_rate": 0.0, "vqa_accuracy": 0.0,
                            "captions_val_CIDEr": 0.0}
    pope = gate_from_recipe(Evaluation(suites={"p": {"kind": "pope"}}))
    assert pope.guarded["p_mean_f1"] == 0.0


def test_loosenings_name_every_way_a_gate_gets_looser() -> None:
    base = gate_from_recipe(Evaluation())
    assert loosenings(base, base) == []
    tighter = GateConfig("vqa_accuracy", 0.02, {"hallucination_rate": 0.0, "x": 0.1},
                         base.lower_is_better, confidence=0.99)
    assert loosenings(tighter, base) == []
    loose = GateConfig("ocr_accuracy", -1.0, {"hallucination_rate": 0.5}, (), confidence=0.5,
                       seed=3)
    assert loosenings(loose, base) == [
        "primary metric vqa_accuracy -> ocr_accuracy", "min_delta 0 -> -1",
        "guard hallucination_rate tolerance 0 -> 0.5", "hallucination_rate: higher is better",
        "confidence 0.95 -> 0.5", "bootstrap seed 0 -> 3"]
    assert loosenings(GateConfig("vqa_accuracy", 0.0, {}, base.lower_is_better), base) == [
        "guard hallucination_rate dropped"]


def test_comparison_table_lists_every_metric_with_its_interval() -> None:
    d = decide({"cider": 0.6, "vqa_acc": 0.61, "ocr": 0.2}, {"cider": 0.5, "vqa_acc": 0.6},
               GATE, {"cider": Interval(0.1, 0.04, 0.16, 0.0012), "vqa_acc": ci(-0.02, 0.04)})
    d = Decision(d.promote, d.reason, d.rows, previous="3", verdicts=d.verdicts)
    lines = comparison_table(d, "4").splitlines()
    assert lines[0].split() == ["metric", "champion", "v3", "candidate", "v4", "delta", "95%",
                                "CI", "of", "delta", "McNemar", "p", "verdict"]
    assert lines[2].split() == ["cider", "0.5000", "0.6000", "+0.1000", "[+0.0400,", "+0.1600]",
                                "0.0012", "pass"]  # the primary first
    assert lines[3].split() == ["ocr", "-", "0.2000", "-", "-", "-", "-"]
    assert lines[4].split() == ["vqa_acc", "0.6000", "0.6100", "+0.0100", "[-0.0200,",
                                "+0.0400]", "-", "ok"]


def test_decision_is_a_plain_value() -> None:
    d = Decision(True, "x")
    assert d.rows == [] and d.previous is None and not d.forced and not d.lost_race


# ------------------------------------------------------------------- a real registry


@pytest.fixture
def versions(home: Path, model_name: str, plain_model_dir: Path) -> list[str]:
    with registry.start_run("train") as run_id:
        return [
            registry.register_hf_model(plain_model_dir, model_name, run_id=run_id, tags={})
            for _ in range(4)
        ]


@pytest.fixture(autouse=True)
def quick_cas(monkeypatch) -> None:
    monkeypatch.setattr(models, "CAS_SETTLE_S", 0.0)


def score(name: str, version: str, right: list[int], halluc: list[int] | None = None, *,
          data: str = "data-a", keys: list[str] | None = None) -> dict[str, float]:
    """Evaluate ``version`` as the evaluate stage records it: metrics, per-item scores on an
    evaluation run, the suite's eval_key (the data version decides it)."""
    n = len(right)
    halluc = halluc if halluc is not None else [0] * n
    table = ItemTable("synthetic", keys or [f"q{i}" for i in range(n)], [float(r) for r in right],
                      {"n": [1] * n, "right": right, "probe": [1] * n, "bad": halluc},
                      {"vqa_accuracy": ratio("right", "n"),
                       "hallucination_rate": ratio("bad", "probe")}, data)
    metrics = {m: table.value(m) for m in table.metrics}
    registry.record_metrics(name, version, metrics)
    with registry.start_run("evaluate") as run_id:
        record_items(name, version, table, run_id=run_id, intervals=table.intervals(resamples=200))
    registry.set_version_tags(name, version, {"eval_key": f"key-{data}", "eval_run_id": run_id})
    return metrics


def shifted(base: list[int], gained: int, lost: int) -> list[int]:
    """``base`` with ``gained`` wrong items made right and ``lost`` right ones made wrong."""
    out = list(base)
    wrong = [i for i, v in enumerate(base) if not v]
    right = [i for i, v in enumerate(base) if v]
    for i in wrong[:gained]:
        out[i] = 1
    for i in right[:lost]:
        out[i] = 0
    return out


BASE = [1 if (i * 7) % 10 < 6 else 0 for i in range(300)]  # 60 % right on 300 questions
GATE_VQA = gate_from_recipe(Evaluation())


def test_two_versions_inside_the_noise_are_not_promoted_two_beyond_it_are(
        model_name: str, versions: list[str]) -> None:
    v1, v2, v3, _ = versions
    score(model_name, v1, BASE)
    score(model_name, v2, shifted(BASE, 6, 3))  # +1 point: inside the noise
    score(model_name, v3, shifted(BASE, 30, 3))  # +9 points: beyond it
    assert registry.promote(model_name, v1, None, GATE_VQA).reason == "no champion yet"

    d = registry.promote(model_name, v2, None, GATE_VQA)
    row = d.rows[0]
    assert row.metric == "vqa_accuracy" and row.delta == pytest.approx(0.01)
    assert row.low < 0 < row.high and 0 < row.p_value < 1  # McNemar: 6 against 3
    assert not d.promote and "inside the noise" in d.reason
    assert registry.get_alias(model_name, "champion") == v1

    d = registry.promote(model_name, v3, None, GATE_VQA)
    assert d.promote and d.rows[0].low > 0 and d.rows[0].p_value < 1e-5, d.reason
    assert d.reason.startswith("vqa_accuracy gain +0.0900 (95% CI +0.0")
    assert registry.get_alias(model_name, "champion") == v3
    tags = registry.version_info(model_name, v3)["tags"]
    recorded = json.loads(tags["promotion.gate"])
    assert recorded == {**GATE_VQA.as_dict(), "forced": False, "reason": None, "loosened": []}
    assert recorded["guarded"] == {"hallucination_rate": 0.0}
    assert read_items(model_name, v3).keys == [f"q{i}" for i in range(300)]


def test_a_guarded_rate_rising_beyond_its_noise_blocks_a_better_primary(
        model_name: str, versions: list[str]) -> None:
    v1, v2, v3, _ = versions
    score(model_name, v1, BASE, [0] * 300)
    registry.promote(model_name, v1, None, GATE_VQA)
    score(model_name, v2, shifted(BASE, 30, 0), [1] * 30 + [0] * 270)  # hallucinates 10 %
    d = registry.promote(model_name, v2, None, GATE_VQA)
    assert not d.promote and d.verdicts == {"vqa_accuracy": "pass", "hallucination_rate": "FAIL"}
    assert d.reason.startswith("guarded metric hallucination_rate worsened by 0.1000 (95% CI")
    score(model_name, v3, shifted(BASE, 30, 0), [1] + [0] * 299)  # one probe: noise
    assert registry.promote(model_name, v3, None, GATE_VQA).promote


def test_different_data_versions_are_refused_naming_both(model_name: str,
                                                        versions: list[str]) -> None:
    v1, v2, v3, _ = versions
    score(model_name, v1, BASE, data="data-a")
    registry.promote(model_name, v1, None, GATE_VQA)
    score(model_name, v2, shifted(BASE, 60, 0), data="data-b")
    d = registry.promote(model_name, v2, None, GATE_VQA)
    assert not d.promote and registry.get_alias(model_name, "champion") == v1
    assert d.reason.startswith(f"v{v2} and champion v{v1} were scored on different data")
    assert f"of v{v2} on data data-b (eval_key key-data-b), of v{v1} on data data-a" in d.reason
    assert f"vlmforge evaluate --model models:/{model_name}/{v1}" in d.reason
    # the same data version but other items (a changed split) is no pairing either
    score(model_name, v3, shifted(BASE, 60, 0), keys=[f"x{i}" for i in range(300)])
    d = registry.promote(model_name, v3, None, GATE_VQA)
    assert not d.promote and "different items: 300 only on the candidate" in d.reason


def test_promotion_flow_records_moves_and_force(model_name: str, versions: list[str]) -> None:
    v1, v2, v3, v4 = versions
    tags = lambda v: registry.version_info(model_name, v)["tags"]  # noqa: E731
    score(model_name, v1, BASE)
    d = registry.promote(model_name, v1, None, GATE_VQA)
    assert d.promote and d.previous is None
    t1 = tags(v1)
    assert t1["promotion.previous"] == "none" and t1["promotion.reason"] == "no champion yet"
    assert datetime.fromisoformat(t1["promotion.time"]).tzinfo is not None

    score(model_name, v4, shifted(BASE, 40, 0))  # dry run of a passing candidate changes nothing
    d = registry.promote(model_name, v4, None, GATE_VQA, dry_run=True)
    assert d.promote and registry.get_alias(model_name, "champion") == v1
    assert "promotion.reason" not in tags(v4)
    d = registry.promote(model_name, v4, None, GATE_VQA)
    assert d.promote and registry.get_alias(model_name, "champion") == v4
    t4 = tags(v4)
    assert t4["promotion.previous"] == v1 and t4["promotion.forced"] == "false"
    assert json.loads(t4["promotion.diff"]) == pytest.approx(
        {"vqa_accuracy": 40 / 300, "hallucination_rate": 0.0})
    assert not registry.promote(model_name, v4, None, GATE_VQA).promote  # holds it already

    score(model_name, v3, BASE)  # force needs a reason, then overrides the gate (a rollback)
    with pytest.raises(ValueError, match="reason"):
        registry.promote(model_name, v3, None, GATE_VQA, force=True)
    with pytest.raises(ValueError, match="needs force and a reason"):
        registry.promote(model_name, v3, None, GATE_VQA, loosened=["min_delta 0 -> -1"])
    d = registry.promote(model_name, v3, None, GATE_VQA, force=True, reason="rollback: v4 broke OCR",
                         loosened=["min_delta 0 -> -1"])
    assert d.promote and d.forced and d.previous == v4
    t3 = tags(v3)
    assert t3["promotion.reason"] == "forced: rollback: v4 broke OCR"
    assert t3["promotion.forced"] == "true" and t3["promotion.previous"] == v4
    gate = json.loads(t3["promotion.gate"])
    assert gate["forced"] and gate["reason"] == "rollback: v4 broke OCR"
    assert gate["loosened"] == ["min_delta 0 -> -1"] and gate["primary"] == "vqa_accuracy"
    h4 = json.loads(tags(v4)["alias_history"])
    assert [e["event"] for e in h4] == ["promoted", "replaced"] and h4[1]["by"] == v3
    assert tags(v4)["demotion.reason"] == t3["promotion.reason"]
    assert [e["event"] for e in json.loads(tags(v1)["alias_history"])] == ["promoted", "replaced"]


def test_promotion_refuses_version_without_metrics(model_name: str, versions: list[str]) -> None:
    with pytest.raises(ValueError, match="no recorded metrics"):
        registry.promote(model_name, versions[0], None, GATE)
    with pytest.raises(ValueError, match="no recorded metrics"):
        registry.promote(model_name, versions[0], None, GATE, force=True, reason="because")
    assert registry.get_alias(model_name, "champion") is None


def test_nan_is_refused_when_recorded_and_when_found_on_a_version(model_name: str,
                                                                 versions: list[str]) -> None:
    v1, v2, _, _ = versions
    with pytest.raises(ValueError, match="not finite"):
        registry.record_metrics(model_name, v1, {"cider": float("nan")})
    registry.record_metrics(model_name, v1, {"cider": 1 / 3})
    assert registry.read_metrics(model_name, v1) == {"cider": 1 / 3}  # exact round trip
    score(model_name, v2, BASE)
    registry.set_version_tags(model_name, v2, {"metric.vqa_accuracy": "nan"})  # by hand
    d = registry.promote(model_name, v2, None, GATE_VQA)
    assert not d.promote and "vqa_accuracy is not finite" in d.reason
    assert registry.get_alias(model_name, "champion") is None


def test_unknown_version_is_a_clear_error(model_name: str, versions: list[str]) -> None:
    with pytest.raises(LookupError, match=f"model '{model_name}' has no version 99"):
        registry.promote(model_name, "99", {"cider": 1.0}, GATE)


# ------------------------------------------------------------------- compare-and-swap


def test_two_interleaved_promotions_leave_one_winner_and_report_the_loser(
        model_name: str, versions: list[str], monkeypatch) -> None:
    """A is gated against v1; before A moves the alias, B (gated against v1 too) moves it."""
    v1, a, b, _ = versions
    for v, gained in ((v1, 0), (a, 40), (b, 50)):
        score(model_name, v, shifted(BASE, gained, 0))
    registry.promote(model_name, v1, None, GATE_VQA)
    real_move, results = promotion.move_alias, {}

    def b_first(name, alias, version, *, expected):
        if version == a:  # between A's check and A's move
            results["b"] = registry.promote(model_name, b, None, GATE_VQA)
        return real_move(name, alias, version, expected=expected)

    monkeypatch.setattr(promotion, "move_alias", b_first)
    results["a"] = registry.promote(model_name, a, None, GATE_VQA)
    assert results["b"].promote and not results["b"].lost_race
    lost = results["a"]
    assert not lost.promote and lost.lost_race
    assert lost.reason == (f"lost a race: 'champion' of {model_name} moved to v{b} while v{a} "
                           f"was gated against v{v1}; nothing recorded on v{a}: gate it again "
                           f"against v{b}")
    assert registry.get_alias(model_name, "champion") == b
    assert "promotion.reason" not in registry.version_info(model_name, a)["tags"]
    assert registry.version_info(model_name, v1)["tags"]["demotion.replaced_by"] == b


def test_a_move_overwritten_before_its_check_is_reported_not_repeated(
        model_name: str, versions: list[str], monkeypatch) -> None:
    """The other mover read the alias before this one's write and wrote after it: the check
    after the move sees the other version, and it is left in place."""
    v1, v2, v3, _ = versions
    real_set = models.set_alias

    def raced(name, alias, version):
        real_set(name, alias, version)
        if version == v2:
            real_set(name, alias, v3)  # lands within the settle time

    monkeypatch.setattr(models, "set_alias", raced)
    models.move_alias(model_name, "champion", v1, expected=None)
    with pytest.raises(models.AliasRaceError, match=f"moved to v{v3} while v{v2}"):
        models.move_alias(model_name, "champion", v2, expected=v1)
    assert registry.get_alias(model_name, "champion") == v3
    with pytest.raises(models.AliasRaceError, match=f"moved to v{v3} while v{v1} was gated "
                                                    "against no version"):
        models.move_alias(model_name, "champion", v1, expected=None)
    assert registry.get_alias(model_name, "champion") == v3
