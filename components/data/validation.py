"""Great Expectations validation of per-split sample manifests (``manifests/{split}.jsonl``).

Great Expectations (and pandas) are imported lazily inside functions: importing GE takes
seconds, and this module must stay cheap to import. Validation always runs in an
ephemeral, in-memory GE context with analytics and progress bars off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from components.data.manifest import COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite

__all__ = [
    "COLUMNS",
    "LEDGER_COLUMNS",
    "DataValidationError",
    "ExpectationFailure",
    "ManifestSuite",
    "ValidationReport",
    "known_tasks",
    "synthetic_source_tasks",
    "validate_ledger",
    "validate_manifest",
    "validate_manifest_file",
]

LEDGER_COLUMNS: tuple[str, ...] = ("key", "location", "status", "rule")
# Task families: the least number of images their samples show (text tasks show none).
IMAGE_TASKS: dict[str, int] = {
    **dict.fromkeys(("caption", "vqa", "ocr", "interleaved", "document", "chart", "table",
                     "counting", "geometry"), 1),
    "spot_difference": 2,
}
TEXT_ONLY_TASKS: tuple[str, ...] = ("text",)  # the task of every TEXT_ONLY_SOURCES source


def synthetic_source_tasks() -> dict[str, tuple[str, ...]]:
    """Source -> task names of the synthetic generators, from their registry
    (``components.data.synthetic.FAMILIES``, which the generator tests hold to the records),
    so a family registered there is known here without a second list to update."""
    from components.data.synthetic import SOURCE_TASK

    return {source: (task,) for source, task in SOURCE_TASK.items()}


def dataset_source_tasks(datasets: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The synthetic sources' tasks plus each dataset's (``data.datasets``: name -> spec with
    a ``format``): the tasks its format makes, any known task when the record names it."""
    from components.data.ingest import FORMATS

    out = synthetic_source_tasks()
    for name, spec in datasets.items():
        out[name] = FORMATS[spec.format].tasks or known_tasks()
    return out


def known_tasks() -> tuple[str, ...]:
    """Every registered task: the synthetic generators' and the ingest formats'."""
    from components.data.ingest import ingest_tasks

    synthetic = [t for tasks in synthetic_source_tasks().values() for t in tasks]
    return tuple(dict.fromkeys([*synthetic, *ingest_tasks()]))


SIZE_COLUMNS: tuple[str, ...] = ("min_width", "min_height", "max_width", "max_height")

_MAX_EXAMPLES = 5
# GE's analytics switch (named in AbstractDataContext.enable_analytics). The installed 1.24.1
# ships no analytics client at all; the variable is set anyway as a guard for other builds.
_GX_ANALYTICS_ENV = "GX_ANALYTICS_ENABLED"


def _gx() -> ModuleType:
    """Import great_expectations with analytics disabled (lazy: the import is slow)."""
    os.environ[_GX_ANALYTICS_ENV] = "False"
    import great_expectations

    return great_expectations


class DataValidationError(Exception):
    """A manifest failed its data-quality expectations."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, with example sample keys of offending rows."""

    expectation: str
    columns: tuple[str, ...]
    unexpected_count: int | None
    examples: list[str] = field(default_factory=list)
    condition: str | None = None
    observed: Any = None
    error: str | None = None

    @property
    def column(self) -> str:
        """Column name(s) the expectation applies to ("table" for table-level ones)."""
        return ", ".join(self.columns) if self.columns else "table"

    def describe(self) -> str:
        """One-line human summary, e.g. ``expect_x(key): 1 unexpected, e.g. ['k']``."""
        target = self.column if self.condition is None else f"{self.column} where {self.condition}"
        head = f"{self.expectation}({target})"
        if self.error is not None:
            return f"{head}: error: {self.error}"
        if self.unexpected_count is None:
            return f"{head}: observed {self.observed!r}"
        text = f"{head}: {self.unexpected_count} unexpected"
        return f"{text}, e.g. {self.examples}" if self.examples else text


@dataclass
class ValidationReport:
    """Result of validating one split's manifest."""

    success: bool
    split: str
    n_rows: int
    failures: list[ExpectationFailure] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        """Summary naming the split and every failed expectation."""
        if self.success:
            return f"manifest {self.split!r} passed ({self.n_rows} rows)"
        parts = "; ".join(f.describe() for f in self.failures)
        return f"manifest {self.split!r} failed {len(self.failures)} expectation(s): {parts}"

    def raise_for_failures(self) -> None:
        """Raise :class:`DataValidationError` if any expectation failed."""
        if not self.success:
            raise DataValidationError(self.message(), self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (e.g. for logging as a run artifact)."""
        out = asdict(self)
        for f, d in zip(self.failures, out["failures"], strict=True):
            d["column"] = f.column
            d["observed"] = _jsonable(f.observed)
        return out


@dataclass(frozen=True)
class ManifestSuite:
    """Expectation suite for one split's manifest.

    Thresholds are GE suite parameters (``$PARAMETER``) resolved at validation time from
    :meth:`parameters`: ``min_side``/``max_side`` bound image sides of samples with images,
    ``max_text_chars`` bounds ``text_chars`` (which must be >= 1).

    ``source_tasks`` maps each allowed source to its tasks (default: the synthetic generator
    registry); an empty mapping allows any source. ``tasks`` is the known task set
    (default: the tasks of ``source_tasks``, or :func:`known_tasks` when it is empty).
    Task families add their own rules: image tasks need an image, text tasks have none.
    """

    split: str
    min_side: int = 8
    max_side: int = 4096
    max_text_chars: int = 20000
    source_tasks: Mapping[str, tuple[str, ...]] | None = None
    tasks: tuple[str, ...] | None = None

    def resolved(self) -> tuple[Mapping[str, tuple[str, ...]], tuple[str, ...]]:
        """(source -> tasks, known tasks) after defaults."""
        source_tasks = synthetic_source_tasks() if self.source_tasks is None else self.source_tasks
        tasks = self.tasks
        if tasks is None:
            values = [t for ts in source_tasks.values() for t in ts]
            tasks = tuple(dict.fromkeys(values)) if source_tasks else known_tasks()
        return source_tasks, tasks

    @property
    def name(self) -> str:
        return f"vlmforge_manifest_{self.split}"

    def parameters(self) -> dict[str, int]:
        """Values for the suite's ``$PARAMETER`` placeholders."""
        return {
            "min_side": self.min_side,
            "max_side": self.max_side,
            "max_text_chars": self.max_text_chars,
        }

    def expectations(self) -> list[Any]:
        """The GE expectation objects of this suite."""
        _gx()
        import great_expectations.expectations as gxe
        from great_expectations.expectations.row_conditions import Column

        def param(name: str) -> dict[str, str]:
            return {"$PARAMETER": name}

        source_tasks, tasks = self.resolved()
        has_images = Column("n_images") > 0
        not_preference = Column("task") != "preference"
        exps: list[Any] = [
            gxe.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ]
        exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in COLUMNS]
        exps += [
            gxe.ExpectColumnValuesToBeUnique(column="key"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="key", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=[self.split]),
            gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(tasks)),
            gxe.ExpectColumnValuesToBeBetween(column="n_images", min_value=0),
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="n_images", column_B="n_image_placeholders"
            ),
            gxe.ExpectColumnValuesToBeBetween(column="n_turns", min_value=1),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="n_turns", column_B="n_assistant_turns", or_equal=True
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="n_assistant_turns", min_value=1, row_condition=not_preference
            ),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="answer", min_value=1, row_condition=not_preference
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="text_chars", min_value=1, max_value=param("max_text_chars")
            ),
        ]
        # source -> task consistency. (ExpectColumnPairValuesToBeInSet would do this in one
        # expectation, but its pandas metric uses DataFrame.iterrows: ~1 s per 10k rows.)
        if source_tasks:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column="source",
                                                        value_set=list(source_tasks)))
        exps += [
            gxe.ExpectColumnValuesToBeInSet(
                column="task", value_set=list(ts), row_condition=Column("source") == src
            )
            for src, ts in source_tasks.items()
        ]
        # task families
        by_min: dict[int, list[str]] = {}
        for t, n in IMAGE_TASKS.items():
            if t in tasks:
                by_min.setdefault(n, []).append(t)
        exps += [
            gxe.ExpectColumnValuesToBeBetween(
                column="n_images", min_value=n, row_condition=Column("task").is_in(ts)
            )
            for n, ts in by_min.items()
        ]
        text_only = [t for t in TEXT_ONLY_TASKS if t in tasks]
        if text_only:
            exps.append(gxe.ExpectColumnValuesToBeBetween(
                column="n_images", max_value=0, row_condition=Column("task").is_in(text_only)
            ))
        exps += [
            gxe.ExpectColumnValuesToBeBetween(
                column=c,
                min_value=param("min_side"),
                max_value=param("max_side"),
                row_condition=has_images,
            )
            for c in SIZE_COLUMNS
        ]
        exps += [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=f"max_{d}", column_B=f"min_{d}", or_equal=True
            )
            for d in ("width", "height")
        ]
        return exps

    def build(self) -> ExpectationSuite:
        """A fresh, unsaved ``gx.ExpectationSuite``."""
        gx = _gx()
        # Passing expectations to the constructor (rather than add_expectation) keeps the
        # suite detached from any context's expectations store.
        exps = self.expectations()
        for i, exp in enumerate(exps):
            exp.meta = {"order": i}  # GE groups results by domain type; restore suite order
        return gx.ExpectationSuite(name=self.name, expectations=exps)


def validate_manifest(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    split: str,
    *,
    min_side: int = 8,
    max_side: int = 4096,
    max_text_chars: int = 20000,
    source_tasks: Mapping[str, tuple[str, ...]] | None = None,
    tasks: tuple[str, ...] | None = None,
) -> ValidationReport:
    """Validate one split's manifest rows with Great Expectations."""
    suite = ManifestSuite(
        split, min_side=min_side, max_side=max_side, max_text_chars=max_text_chars,
        source_tasks=source_tasks, tasks=tasks,
    )
    return _run_suite(_frame(rows, COLUMNS), split, suite.name, suite.expectations(),
                      suite.parameters())


def validate_ledger(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    name: str,
    *,
    read: int,
    max_quarantine_rate: float,
    rules: Iterable[str],
) -> ValidationReport:
    """Great Expectations over an ingest's per-record results (one row per record read).

    Columns :data:`LEDGER_COLUMNS`; ``status`` is ``accepted`` or ``quarantined``. The suite
    checks the balance (exactly ``read`` rows), that every quarantined row names a known
    rule and every accepted one none, that accepted keys are unique, and — with GE's
    ``mostly`` — that at most ``max_quarantine_rate`` of the rows were quarantined.
    """
    _gx()
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    if not 0.0 <= max_quarantine_rate <= 1.0:
        raise ValueError(f"max_quarantine_rate {max_quarantine_rate} not in [0, 1]")
    accepted = Column("status") == "accepted"
    quarantined = Column("status") == "quarantined"
    exps = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(LEDGER_COLUMNS), exact_match=True),
        gxe.ExpectTableRowCountToEqual(value=read),
        gxe.ExpectColumnValuesToNotBeNull(column="location"),
        gxe.ExpectColumnDistinctValuesToBeInSet(column="status",
                                                value_set=["accepted", "quarantined"]),
        gxe.ExpectColumnValuesToBeUnique(column="key", row_condition=accepted),
        gxe.ExpectColumnValuesToBeNull(column="rule", row_condition=accepted),
        gxe.ExpectColumnValuesToNotBeNull(column="rule", row_condition=quarantined),
        gxe.ExpectColumnValuesToBeInSet(column="rule", value_set=sorted(rules),
                                        row_condition=quarantined),
        # the threshold; the small margin keeps a rate exactly at the limit a pass
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["accepted"],
                                        mostly=max(0.0, 1.0 - max_quarantine_rate - 1e-9)),
    ]
    return _run_suite(_frame(rows, LEDGER_COLUMNS), name, f"vlmforge_ingest_{name}", exps, {})


def _frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, columns: tuple[str, ...]) -> Any:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        df = rows
    else:
        records = list(rows)
        # An empty table still gets the expected columns: only the row count fails.
        df = pd.DataFrame.from_records(records, columns=None if records else list(columns))
    return df.reset_index(drop=True)  # positional index <-> GE's unexpected index list


def _run_suite(
    df: pd.DataFrame, split: str, name: str, exps: list[Any], parameters: dict[str, Any]
) -> ValidationReport:
    """Validate ``df`` against ``exps`` in an ephemeral GE context."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for i, exp in enumerate(exps):
        exp.meta = {"order": i}  # GE groups results by domain type; restore suite order
    # Passing expectations to the constructor (rather than add_expectation) keeps the
    # suite detached from any context's expectations store.
    suite = gx.ExpectationSuite(name=name, expectations=exps)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas(f"source_{split}").add_dataframe_asset(split)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": df}
    )
    result = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        expectation_parameters=parameters,
    )

    keys = df["key"].tolist() if "key" in df.columns else None
    failed = sorted(
        (r for r in result.results if not r.success),
        key=lambda r: (r.expectation_config.meta or {}).get("order", 0),
    )
    failures = [_failure(r, keys) for r in failed]
    return ValidationReport(
        success=bool(result.success),
        split=split,
        n_rows=len(df),
        failures=failures,
        statistics=dict(result.statistics),
    )


def validate_manifest_file(path: Path | str, split: str, **kw: Any) -> ValidationReport:
    """Read a JSONL manifest and :func:`validate_manifest` it."""
    rows: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataValidationError(f"{path}:{lineno}: invalid JSON: {e}") from e
    return validate_manifest(rows, split, **kw)


def _failure(res: Any, keys: list[Any] | None) -> ExpectationFailure:
    """Convert a failed GE ExpectationValidationResult into an ExpectationFailure."""
    cfg = res.expectation_config
    kwargs = cfg.kwargs
    columns = tuple(
        str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k) is not None
    )
    body = res.result or {}
    mismatched = (body.get("details") or {}).get("mismatched")
    return ExpectationFailure(
        expectation=cfg.type,
        columns=columns,
        unexpected_count=body.get("unexpected_count"),
        examples=_examples(body.get("partial_unexpected_index_list") or [], keys),
        condition=_condition_text(kwargs.get("row_condition")),
        observed=_jsonable(mismatched if mismatched else body.get("observed_value")),
        error=_error_message(res.exception_info),
    )


def _error_message(info: Any) -> str | None:
    """Exception message from GE's exception_info (flat, or keyed by metric id)."""
    if not isinstance(info, Mapping):
        return None
    infos = [info] if "raised_exception" in info else list(info.values())
    for item in infos:
        if isinstance(item, Mapping) and item.get("raised_exception"):
            return str(item.get("exception_message") or "exception").removeprefix("Error: ")
    return None


def _examples(index_list: Iterable[Any], keys: list[Any] | None) -> list[str]:
    """Map GE's unexpected row indices to (deduplicated) sample keys."""
    out: list[str] = []
    for idx in index_list:
        if isinstance(idx, Mapping):  # when unexpected_index_column_names is used
            label = str(idx.get("key", idx))
        else:
            i = int(idx)
            key = keys[i] if keys is not None and 0 <= i < len(keys) else None
            label = f"<row {i}>" if key is None or key != key or key == "" else str(key)
        if label not in out:
            out.append(label)
        if len(out) == _MAX_EXAMPLES:
            break
    return out


def _condition_text(cond: Any) -> str | None:
    """Render a serialized GE row_condition like ``task != 'preference'``."""
    if not cond:
        return None
    if isinstance(cond, Mapping) and cond.get("type") == "comparison":
        return f"{cond['column']['name']} {cond['operator']} {cond['parameter']!r}"
    return str(cond)


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of GE/numpy values to plain JSON types."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
