"""Tests for the Great Expectations manifest validation (components/data/validation.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.data.validation import (
    DataValidationError,
    ExpectationFailure,
    ManifestSuite,
    ValidationReport,
    validate_manifest,
    validate_manifest_file,
)

# the synthetic pipeline's registered sources, one task each
SOURCE_TASK = {"scenes_caption": "caption", "scenes_vqa": "vqa", "ocr": "ocr", "text": "text",
               "preference": "preference"}

REPO = Path(__file__).resolve().parents[3]
SOURCES = list(SOURCE_TASK)


def make_row(i: int, source: str, split: str = "train") -> dict[str, Any]:
    """A valid manifest row as the data stage writes it."""
    task = SOURCE_TASK[source]
    n_images = {"text": 0, "scenes_vqa": 2}.get(source, 1)
    preference = task == "preference"
    return {
        "key": f"{source}-{split}-{i:07d}",
        "split": split,
        "source": source,
        "task": task,
        "n_images": n_images,
        "n_image_placeholders": n_images,
        "n_turns": 1 if preference else 2,
        "n_assistant_turns": 0 if preference else 1,
        "answer": "" if preference else f"answer {i}",
        "text_chars": 40 + i,
        "min_width": 32 * bool(n_images),
        "min_height": 24 * bool(n_images),
        "max_width": 64 * bool(n_images),
        "max_height": 48 * bool(n_images),
        "shard": f"{split}-{i // 10:06d}.tar",
    }


def clean_rows(n: int = 20, split: str = "train") -> list[dict[str, Any]]:
    return [make_row(i, SOURCES[i % len(SOURCES)], split) for i in range(n)]


def find(
    report: ValidationReport, expectation: str, column: str, condition: str | None = None
) -> ExpectationFailure:
    for f in report.failures:
        if (f.expectation, f.column, f.condition) == (expectation, column, condition):
            return f
    raise AssertionError(f"no failure {expectation}({column}) in: {report.message()}")


def test_clean_manifest_passes() -> None:
    rows = clean_rows()
    report = validate_manifest(rows, "train")
    assert report.success, report.message()
    assert report.failures == []
    assert report.n_rows == len(rows)
    stats = report.statistics
    assert stats["evaluated_expectations"] == stats["successful_expectations"] > 20
    report.raise_for_failures()  # no-op
    assert report.message() == f"manifest 'train' passed ({len(rows)} rows)"


def test_dataframe_input_with_custom_index_maps_keys() -> None:
    rows = clean_rows()
    rows[7]["text_chars"] = 0
    df = pd.DataFrame(rows, index=range(100, 100 + len(rows)))
    report = validate_manifest(df, "train")
    assert find(report, "expect_column_values_to_be_between", "text_chars").examples == [
        rows[7]["key"]
    ]


# Each broken rule is applied to its own row of clean_rows(20) and all are validated in one
# GE run (a run costs ~0.4 s of fixed GE overhead). Row i has source SOURCES[i % 5]:
# 0 scenes_caption, 1 scenes_vqa (2 images), 2 ocr, 3 text (no images), 4 preference.
# case: (row, changes, expectation, column, row condition)
BROKEN: dict[str, tuple[int, dict[str, Any], str, str, str | None]] = {
    "duplicate_key": (6, {}, "expect_column_values_to_be_unique", "key", None),
    "unknown_task": (3, {"task": "captioning"}, "expect_column_values_to_be_in_set", "task", None),
    "unknown_source": (12, {"source": "web"}, "expect_column_values_to_be_in_set", "source", None),
    "source_task_mismatch": (
        0,
        {"task": "vqa"},
        "expect_column_values_to_be_in_set",
        "task",
        "source == 'scenes_caption'",
    ),
    "wrong_split": (8, {"split": "val"}, "expect_column_values_to_be_in_set", "split", None),
    "placeholder_mismatch": (
        11,
        {"n_image_placeholders": 1},
        "expect_column_pair_values_to_be_equal",
        "n_images, n_image_placeholders",
        None,
    ),
    "empty_vqa_answer": (
        16,
        {"answer": ""},
        "expect_column_value_lengths_to_be_between",
        "answer",
        "task != 'preference'",
    ),
    "no_assistant_turn": (
        10,
        {"n_assistant_turns": 0},
        "expect_column_values_to_be_between",
        "n_assistant_turns",
        "task != 'preference'",
    ),
    "zero_size_image": (
        2,
        {"min_width": 0},
        "expect_column_values_to_be_between",
        "min_width",
        "n_images > 0",
    ),
    "oversized_image": (
        7,
        {"max_height": 5000},
        "expect_column_values_to_be_between",
        "max_height",
        "n_images > 0",
    ),
    "empty_text": (13, {"text_chars": 0}, "expect_column_values_to_be_between", "text_chars", None),
    "too_much_text": (
        18,
        {"text_chars": 20001},
        "expect_column_values_to_be_between",
        "text_chars",
        None,
    ),
    "null_shard": (4, {"shard": None}, "expect_column_values_to_not_be_null", "shard", None),
}


@pytest.fixture(scope="module")
def broken() -> tuple[list[dict[str, Any]], ValidationReport]:
    rows = clean_rows(20)
    for idx, changes, *_ in BROKEN.values():
        rows[idx].update(changes)
    rows[BROKEN["duplicate_key"][0]]["key"] = rows[1]["key"]  # duplicates row 1's key
    return rows, validate_manifest(rows, "train")


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_rule_fails_with_offending_key(
    case: str, broken: tuple[list[dict[str, Any]], ValidationReport]
) -> None:
    rows, report = broken
    idx, _, expectation, column, condition = BROKEN[case]
    assert not report.success
    failure = find(report, expectation, column, condition)
    assert rows[idx]["key"] in failure.examples
    assert failure.unexpected_count is not None and failure.unexpected_count >= 1
    with pytest.raises(DataValidationError, match=f"{expectation}\\({column}"):
        report.raise_for_failures()


def test_broken_rules_flag_exactly_the_broken_rows(
    broken: tuple[list[dict[str, Any]], ValidationReport],
) -> None:
    rows, report = broken
    expected: dict[tuple[str, str, str | None], list[str]] = {}
    for idx, _, expectation, column, condition in BROKEN.values():
        expected.setdefault((expectation, column, condition), []).append(rows[idx]["key"])
    # unknown task: the row also matches no source -> task pair
    expected[("expect_column_values_to_be_in_set", "task", "source == 'text'")] = [rows[3]["key"]]
    got = {(f.expectation, f.column, f.condition): sorted(f.examples) for f in report.failures}
    assert got == {k: sorted(v) for k, v in expected.items()}
    assert report.statistics["unsuccessful_expectations"] == len(expected)


def test_preference_and_text_only_rows_are_exempt() -> None:
    rows = [make_row(i, "preference") for i in range(3)] + [make_row(9, "text")]
    assert all(r["answer"] == "" and r["n_assistant_turns"] == 0 for r in rows[:3])
    assert rows[3]["min_width"] == rows[3]["n_images"] == 0
    assert validate_manifest(rows, "train").success


def test_side_limits_are_parameters() -> None:
    rows = clean_rows()
    rows[1]["max_width"] = 6000
    default = validate_manifest(rows, "train")
    assert [f.column for f in default.failures] == ["max_width"]
    custom = validate_manifest(rows, "train", min_side=30, max_side=8192)
    assert [f.column for f in custom.failures] == ["min_height"]  # image rows: 32 x 24 .. 64 x 48
    suite = ManifestSuite("train", max_side=8192)
    assert suite.parameters() == {"min_side": 8, "max_side": 8192, "max_text_chars": 20000}
    gx_suite = suite.build()
    assert gx_suite.name == "vlmforge_manifest_train"
    assert {"min_side", "max_side", "max_text_chars"} <= set(gx_suite.suite_parameter_options)


def test_error_message_format() -> None:
    rows = clean_rows()
    rows[3]["key"] = rows[1]["key"]  # 'scenes_vqa-train-0000001'
    rows[8]["text_chars"] = 0
    report = validate_manifest(rows, "train")
    with pytest.raises(DataValidationError) as exc:
        report.raise_for_failures()
    assert str(exc.value) == (
        "manifest 'train' failed 2 expectation(s): "
        "expect_column_values_to_be_unique(key): 2 unexpected, e.g. ['scenes_vqa-train-0000001']; "
        "expect_column_values_to_be_between(text_chars): 1 unexpected, "
        "e.g. ['text-train-0000008']"
    )
    assert exc.value.report is report
    json.dumps(report.to_dict())  # serialisable for run artifacts


def test_examples_are_capped_at_five() -> None:
    rows = clean_rows(30)
    for r in rows:
        r["split"] = "test"
    failure = find(validate_manifest(rows, "train"), "expect_column_values_to_be_in_set", "split")
    assert failure.unexpected_count == 30
    assert failure.examples == [r["key"] for r in rows[:5]]


def test_schema_problems_are_reported() -> None:
    rows = clean_rows()
    for r in rows:
        del r["shard"]
        r["extra"] = 1
    report = validate_manifest(rows, "train")
    table = find(report, "expect_table_columns_to_match_set", "table")
    assert table.observed == {"missing": ["shard"], "unexpected": ["extra"]}
    null = find(report, "expect_column_values_to_not_be_null", "shard")
    assert null.error is not None and "shard" in null.error
    assert "expect_table_columns_to_match_set(table)" in report.message()


def test_empty_manifest_fails_on_row_count() -> None:
    report = validate_manifest([], "val")
    assert [f.expectation for f in report.failures] == ["expect_table_row_count_to_be_between"]
    assert report.n_rows == 0


def test_validate_manifest_file(tmp_path: Path) -> None:
    path = tmp_path / "manifests" / "val.jsonl"
    path.parent.mkdir()
    rows = clean_rows(10, split="val")
    rows[4]["task"] = "bogus"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    report = validate_manifest_file(path, "val")
    assert report.split == "val" and report.n_rows == 10
    assert find(report, "expect_column_values_to_be_in_set", "task").examples == [rows[4]["key"]]
    path.write_text("{not json\n")
    with pytest.raises(DataValidationError, match="val.jsonl:1"):
        validate_manifest_file(path, "val")


def test_import_is_lazy_and_validation_stays_offline() -> None:
    """Import pulls in neither GE nor pandas; validation opens no sockets, loads no mlflow."""
    script = textwrap.dedent(
        """
        import json, os, socket, sys
        attempts = []
        def refuse(self, address, *a, **k):
            attempts.append(repr(address))
            raise OSError("network disabled in test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import components.data.validation as v
        lazy = not ({"great_expectations", "pandas"} & set(sys.modules))
        rows = [dict(key="text-train-0000000", split="train", source="text", task="text",
                     n_images=0, n_image_placeholders=0, n_turns=2, n_assistant_turns=1,
                     answer="4", text_chars=10, min_width=0, min_height=0, max_width=0,
                     max_height=0, shard="train-000000.tar")]
        ok = v.validate_manifest(rows, "train").success
        banned = sorted({"mlflow", "prefect"} & {m.split(".")[0] for m in sys.modules})
        print(json.dumps({"lazy": lazy, "ok": ok, "attempts": attempts, "banned": banned,
                          "env": os.environ.get("GX_ANALYTICS_ENABLED")}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"lazy": True, "ok": True, "attempts": [], "banned": [], "env": "False"}
    assert "Calculating Metrics" not in out.stderr  # progress bars off


# --- task registry and the ingest ledger suite ----------------------------------------------


def test_known_tasks_follow_the_generator_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from components.data import synthetic as params
    from components.data.validation import known_tasks, synthetic_source_tasks

    assert {s: t[0] for s, t in synthetic_source_tasks().items()} == params.SOURCE_TASK
    assert SOURCE_TASK.items() <= params.SOURCE_TASK.items()
    row = make_row(0, "text") | {"source": "new_family", "task": "new_qa"}
    assert not validate_manifest([row, make_row(1, "ocr")], "train").success
    monkeypatch.setitem(params.SOURCE_TASK, "new_family", "new_qa")
    assert synthetic_source_tasks()["new_family"] == ("new_qa",)
    assert {"new_qa", "interleaved", "instruct"} <= set(known_tasks())
    assert validate_manifest([row, make_row(1, "ocr")], "train").success


def ledger_rows(n_ok: int, bad: list[str]) -> list[dict[str, Any]]:
    rows = [{"key": f"k{i}", "location": f"f.jsonl:{i}", "status": "accepted", "rule": None}
            for i in range(n_ok)]
    rows += [{"key": f"q{i}", "location": f"f.jsonl:{n_ok + i}", "status": "quarantined",
              "rule": rule} for i, rule in enumerate(bad)]
    return rows


def test_ledger_suite_passes_a_balanced_ledger_under_the_threshold() -> None:
    from components.data.quarantine import RULES
    from components.data.validation import validate_ledger

    report = validate_ledger(ledger_rows(9, ["image_decode"]), "ledger", read=10,
                             max_quarantine_rate=0.1, rules=RULES)
    assert report.success, report.message()


def test_ledger_suite_catches_imbalance_bad_rules_and_the_rate() -> None:
    from components.data.quarantine import RULES
    from components.data.validation import validate_ledger

    rows = ledger_rows(6, ["image_decode", "no_such_rule", None])
    rows[0]["rule"] = "image_decode"  # accepted but with a rule
    rows[2]["key"] = rows[1]["key"]  # duplicate accepted key
    rows[3]["status"] = "lost"
    report = validate_ledger(rows, "ledger", read=10, max_quarantine_rate=0.1, rules=RULES)
    got = {(f.expectation, f.column, f.condition) for f in report.failures}
    assert got == {
        ("expect_table_row_count_to_equal", "table", None),
        ("expect_column_distinct_values_to_be_in_set", "status", None),
        ("expect_column_values_to_be_unique", "key", "status == 'accepted'"),
        ("expect_column_values_to_be_null", "rule", "status == 'accepted'"),
        ("expect_column_values_to_not_be_null", "rule", "status == 'quarantined'"),
        ("expect_column_values_to_be_in_set", "rule", "status == 'quarantined'"),
        ("expect_column_values_to_be_in_set", "status", None),  # 4 of 9 not accepted > 10 %
    }


def test_task_family_image_counts() -> None:
    rows = clean_rows(10)
    rows[0].update(n_images=0, n_image_placeholders=0, min_width=0, min_height=0, max_width=0,
                   max_height=0)  # a caption without an image
    rows[3].update(n_images=1, n_image_placeholders=1, min_width=32, min_height=24,
                   max_width=32, max_height=24)  # a text task with one
    report = validate_manifest(rows, "train")
    got = {f.condition.split(",")[0]: f.examples for f in report.failures}
    assert got == {"task IN ['caption'": [rows[0]["key"]], "task IN ['text']": [rows[3]["key"]]}
