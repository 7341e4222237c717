"""Intervals of benchmark scores: the statistics against hand-worked numbers, and the per-item
tables of the real suites reproducing the very scores the suites record."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from components.data.synthetic.scenes import generate_caption, generate_vqa
from components.data.synthetic.text_tasks import generate as generate_text
from components.evaluation.intervals import (
    ItemTable,
    benchmark_table,
    bootstrap_mean_ci,
    f1,
    mcnemar_exact,
    mean_of,
    paired_bootstrap_diff_ci,
    paired_differences,
    ratio,
    synthetic_table,
)
from components.evaluation.pope import build_pope, pope_metrics, pope_rows
from components.evaluation.synthetic_suite import score_predictions

MANY = 20_000  # resamples where a test reads an exact quantile of a small discrete law


def test_bootstrap_of_a_mean_hand_worked():
    # mean of 4 draws from [0, 0, 0, 1] is k/4 with k ~ Binomial(4, 1/4):
    # P(k <= 2) = 0.949 < 0.975 <= P(k <= 3) = 0.996, and P(k = 0) = 0.316 >= 0.025
    ci = bootstrap_mean_ci([0, 0, 0, 1], resamples=MANY, seed=1)
    assert (ci.estimate, ci.low, ci.high) == (0.25, 0.0, 0.75)
    assert bootstrap_mean_ci([0.4] * 7).as_list() == pytest.approx([0.4, 0.4])  # no spread


def test_bootstrap_matches_the_normal_approximation_on_many_items():
    rng = np.random.default_rng(3)
    x = (rng.random(1000) < 0.5).astype(float)
    ci = bootstrap_mean_ci(x, resamples=4000, seed=0)
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / x.size)  # 0.031
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.1)
    assert ci.low < x.mean() < ci.high


def test_paired_difference_hand_worked_and_narrower_than_unpaired():
    ci = paired_bootstrap_diff_ci([1, 1, 0, 1], [0, 1, 0, 1], resamples=MANY, seed=2)
    assert (ci.estimate, ci.low, ci.high) == (0.25, 0.0, 0.75)  # differences [1, 0, 0, 0]
    ci = paired_bootstrap_diff_ci([1, 0], [0, 1], resamples=MANY)  # -1, 0, 1 w.p. 1/4, 1/2, 1/4
    assert (ci.low, ci.high) == (-1.0, 1.0)
    # the same items, one version right on 20 more of 400: pairing removes the shared noise
    rng = np.random.default_rng(0)
    old = (rng.random(400) < 0.6).astype(float)
    new = old.copy()
    new[np.flatnonzero(old == 0)[:20]] = 1
    paired = paired_bootstrap_diff_ci(new, old)
    a, b = bootstrap_mean_ci(new), bootstrap_mean_ci(old)
    assert paired.low > 0 > a.low - b.high  # separate intervals overlap, the paired one clears 0
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_diff_ci([1, 0], [1])
    with pytest.raises(ValueError, match="not finite"):
        bootstrap_mean_ci([1.0, float("nan")])


def test_seeded():
    x = np.random.default_rng(5).random(50)
    assert bootstrap_mean_ci(x, seed=7) == bootstrap_mean_ci(x, seed=7)
    assert bootstrap_mean_ci(x, seed=7) != bootstrap_mean_ci(x, seed=8)


def test_mcnemar_exact_hand_worked():
    # 9 items only the candidate gets right, 1 only the champion, 5 both: n = 10 discordant,
    # p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024
    cand = [1] * 9 + [0] + [1] * 5
    champ = [0] * 9 + [1] + [1] * 5
    m = mcnemar_exact(cand, champ)
    assert (m.better, m.worse, m.p_value) == (9, 1, 22 / 1024)
    assert mcnemar_exact([1, 0], [0, 1]).p_value == 1.0
    assert mcnemar_exact([1, 1], [1, 1]).p_value == 1.0  # nothing discordant
    with pytest.raises(ValueError, match="0 or 1"):
        mcnemar_exact([0.5], [1])


def _table(keys, columns, metrics, suite="s"):
    return ItemTable(suite, list(keys), [None] * len(keys), columns, metrics)


def test_formulas_ratio_f1_mean_and_empty_denominators():
    t = _table("abcdefg", {"tp": [1, 1, 1, 0, 0, 0, 0], "fp": [0, 0, 0, 1, 0, 0, 0],
                           "fn": [0, 0, 0, 0, 1, 1, 0], "n": [1] * 7, "none": [0] * 7},
               {"f1": f1("tp", "fp", "fn"), "precision": ratio("tp", "none"),
                "pct": ratio("tp", "n", 100.0), "both": mean_of("f1", "pct")})
    assert t.value("f1") == pytest.approx(6 / 9)  # 2*3 / (2*3 + 1 + 2)
    assert t.value("precision") == 0.0  # 0 / 0 counts as 0, as yes_no_metrics does
    assert t.value("pct") == pytest.approx(300 / 7)
    assert t.value("both") == pytest.approx((6 / 9 + 300 / 7) / 2)
    back = ItemTable.from_json(json.loads(json.dumps(t.to_json())))
    assert back.keys == t.keys and back.metrics == t.metrics
    assert {m: back.value(m) for m in t.metrics} == {m: t.value(m) for m in t.metrics}
    with pytest.raises(ValueError, match="not unique"):
        _table("aa", {"n": [1, 1]}, {})
    with pytest.raises(ValueError, match="unknown columns"):
        _table("ab", {"n": [1, 1]}, {"x": ratio("c", "n")})


def test_a_pooled_rate_is_resampled_as_a_ratio_of_sums():
    # 2 of 4 probes bad on items that are probes; the non-probe items change nothing
    t = _table("abcdef", {"probe": [1, 1, 1, 1, 0, 0], "bad": [1, 1, 0, 0, 0, 0]},
               {"rate": ratio("bad", "probe")})
    ci = t.intervals(resamples=MANY)["rate"]
    assert ci.estimate == 0.5 and ci.low == 0.0 and ci.high == 1.0
    assert t.verified({"rate": 0.5}).metrics == {"rate": ratio("bad", "probe")}
    assert t.verified({"rate": 0.51}).metrics == {}  # a formula that misses its score is dropped


@pytest.fixture(scope="module")
def suite_samples():
    return ([generate_caption(0, i, "test") for i in range(30)]
            + [generate_vqa(0, i, "test") for i in range(120)]
            + [generate_text(0, i, "test") for i in range(20)])


def _predictions(samples, seed):
    """Answers right about 60 % of the time, "yes" at random, captions from the references
    with a shape swapped now and then (so some hallucinate)."""
    rng = random.Random(seed)
    out = []
    for s in samples:
        rec = s.record
        if rec["task"] == "caption":
            cap = rec["answers"][rng.randrange(len(rec["answers"]))]
            out.append(cap.replace("circle", "star") if rng.random() < 0.4 else cap)
        elif rec.get("qtype") == "existence":
            out.append(rng.choice(["yes", "no"]))
        else:
            out.append(rec["answers"][0] if rng.random() < 0.6 else "blue")
    return out


def test_synthetic_table_reproduces_every_score_of_the_suite(suite_samples):
    result = score_predictions(suite_samples, _predictions(suite_samples, 0))
    table = synthetic_table("synthetic", [s.record for s in suite_samples], result.rows,
                            result.metrics, data_version="d1")
    assert set(table.metrics) == set(result.metrics)  # every recorded score has a formula
    for m, v in result.metrics.items():
        assert table.value(m) == pytest.approx(v, abs=1e-12), m
    assert table.keys == [s.key for s in suite_samples]
    intervals = table.intervals(resamples=500)
    for m, ci in intervals.items():
        assert ci.low <= result.metrics[m] + 1e-12 and result.metrics[m] <= ci.high + 1e-12, m
    assert intervals["vqa_accuracy"].high > intervals["vqa_accuracy"].low
    # prefixed names, as a named synthetic suite records them
    prefixed = synthetic_table("fewshot", [s.record for s in suite_samples], result.rows,
                               {f"fewshot_{k}": v for k, v in result.metrics.items()},
                               prefix="fewshot_")
    assert set(prefixed.metrics) == {f"fewshot_{k}" for k in result.metrics}


def test_vqa_is_reported_for_seen_and_held_out_phrasings_per_question_type(suite_samples):
    # right in the training phrasings, wrong in the held-out ones
    preds = [s.record["answers"][0] if s.record.get("phrasing") != "unseen" else "nothing"
             for s in suite_samples]
    result = score_predictions(suite_samples, preds)
    m = result.metrics
    for qtype in ("colour", "existence", "count", "position", "shape"):
        assert m[f"phrasing_seen_{qtype}_accuracy"] == 1.0
        assert m[f"phrasing_unseen_{qtype}_accuracy"] == 0.0
    assert m["phrasing_seen_accuracy"] == 1.0 and m["vqa_accuracy"] == 0.5
    table = synthetic_table("synthetic", [s.record for s in suite_samples], result.rows, m)
    assert table.intervals(resamples=200)["phrasing_unseen_colour_accuracy"].high == 0.0


def test_paired_differences_of_two_versions_on_the_same_items(suite_samples):
    records = [s.record for s in suite_samples]
    tables = []
    for seed in (0, 1):
        result = score_predictions(suite_samples, _predictions(suite_samples, seed))
        tables.append(synthetic_table("synthetic", records, result.rows, result.metrics))
    new, old = tables
    same = paired_differences(new, new, resamples=300)
    assert all(d.low == d.high == d.estimate == 0.0 for d in same.values())
    assert same["vqa_accuracy"].p_value == 1.0  # an accuracy: McNemar's p beside it
    assert same["existence_f1"].p_value is None  # not a share of right answers
    diff = paired_differences(new, old, resamples=300)
    assert diff["vqa_accuracy"].estimate == pytest.approx(new.value("vqa_accuracy")
                                                          - old.value("vqa_accuracy"))
    assert diff["vqa_accuracy"].low <= diff["vqa_accuracy"].estimate <= diff["vqa_accuracy"].high
    shuffled = ItemTable(old.suite, old.keys[::-1], old.scores[::-1],
                         {k: v[::-1] for k, v in old.columns.items()}, old.metrics)
    assert paired_differences(new, shuffled, resamples=300) == diff  # paired by key, not order
    fewer = ItemTable(old.suite, old.keys[1:], old.scores[1:],
                      {k: v[1:] for k, v in old.columns.items()}, old.metrics)
    with pytest.raises(ValueError, match="different items: 1 only on the candidate"):
        paired_differences(new, fewer)


def test_pope_table_reproduces_the_pope_scores(suite_samples):
    scenes = [s for s in suite_samples if "objects" in s.record][:20]
    questions = build_pope([(s.key, s.record) for s in scenes])
    rng = random.Random(0)
    preds = [rng.choice(["yes", "no", "Yes, there is."]) for _ in questions]
    metrics = {f"pope_{k}": v for k, v in pope_metrics(questions, preds).items()}
    table = benchmark_table("pope", "pope", pope_rows(questions, preds), metrics, prefix="pope_")
    assert set(table.metrics) == set(metrics)
    assert len(set(table.keys)) == len(questions)
    for m, v in metrics.items():
        assert table.value(m) == pytest.approx(v, abs=1e-12), m


def test_official_accuracy_and_caption_cider_tables():
    rows = [{"key": str(i), "score": s, "prediction": "", "answers": ["x"]}
            for i, s in enumerate([1.0, 0.3, 0.0, 1.0])]
    vqa = benchmark_table("v", "vqa", rows, {"v_accuracy": 57.5, "v_accuracy_other": 50.0},
                          prefix="v_")
    assert set(vqa.metrics) == {"v_accuracy"}  # per answer type: no per-item data
    assert benchmark_table("v", "vqa", rows, {"v_accuracy": 57.51}, prefix="v_").metrics
    from components.evaluation.caption_metrics import caption_scores

    preds = ["a red circle", "a blue square at the top", "two green stars", "a red circle"]
    refs = [["a red circle"], ["a blue square"], ["a green star", "two stars"], ["a blue circle"]]
    cider = caption_scores(dict(enumerate(preds)), dict(enumerate(refs)), metrics=("CIDEr",))
    rows = [{"key": str(i), "score": None, "prediction": p, "answers": r}
            for i, (p, r) in enumerate(zip(preds, refs, strict=True))]
    table = benchmark_table("caps", "caption", rows, {"caps_CIDEr": cider["CIDEr"]},
                            prefix="caps_")
    assert table.value("caps_CIDEr") == pytest.approx(cider["CIDEr"], abs=1e-12)
