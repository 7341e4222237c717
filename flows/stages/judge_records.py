"""Judge records in MLflow: the evaluate stage logs each judged suite's record
(components/evaluation/judge_records.py) on the suite's run; `vlmforge evaluate --rejudge
RUN_ID` replays the stored predictions of that run's judged suites under the judge the current
suite config names (or flags), without generating again, each replay its own MLflow run (a
child of the replayed one) with its new record. Replaying the recorded judge makes no call."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import registry
from components.evaluation.judge_records import JudgeRecord, replay
from components.evaluation.suites import JudgeSpec, metric_prefix
from registry.judge_runs import download_record, judged_runs, log_record

__all__ = ["RejudgeOutcome", "judge_spec_for", "log_judge_record", "rejudge"]


@dataclass
class RejudgeOutcome:
    """One suite replayed: the replayed run, the new run, the judge and the scores."""

    suite: str
    source_run_id: str
    run_id: str
    judge: str  # the judge's cache id
    judge_from: str  # "suite config", "record" (the recorded judge), "flags"
    metrics: dict[str, float]  # prefixed, as the suite records them
    recorded: dict[str, float]  # the replayed record's, prefixed
    summary: dict


def log_judge_record(record: JudgeRecord, suite: str, run_id: str | None = None) -> str | None:
    """Log a suite's judge record on its run (artifacts ``<suite>/judge/``; tags with the new
    calls, their tokens and estimated cost); the stop message when a budget or the deadline
    cut the run short."""
    s = record.summary
    with tempfile.TemporaryDirectory() as tmp:
        record.write(tmp)
        log_record(tmp, suite, run_id=run_id)
    registry.set_tags({"judge_calls": s["calls"],
                       "judge_tokens": s["prompt_tokens"] + s["completion_tokens"],
                       "judge_estimated_cost": f"{s['estimated_cost']:.6g}",
                       "judge_judged": f"{s['judged']}/{s['items']}",
                       **({"judge_stopped": s["stopped"]} if s["stopped"] else {})},
                      run_id=run_id)
    return s["stopped"]


def judge_spec_for(base: JudgeSpec, overrides: Mapping[str, Any] | None) -> JudgeSpec:
    """``base`` with ``overrides`` (None values ignored); another backend drops the base's
    endpoint settings (``base_url``, ``api_key_env``)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return base
    raw = base.model_dump()
    if given.get("backend", base.backend) != base.backend:
        raw.update(base_url=None, api_key_env=None)
    return JudgeSpec.model_validate({**raw, **given})


def rejudge(run_id: str, judges: Mapping[str, JudgeSpec], overrides: Mapping[str, Any] | None,
            cache_dir: str | Path, suites: Sequence[str] | None = None) -> list[RejudgeOutcome]:
    """Replay the judge records of run ``run_id`` (or of its child runs) under, per suite, the
    judge of ``judges`` (else the recorded one) with ``overrides``; LookupError when there is
    nothing to replay."""
    found = [j for j in judged_runs(run_id) if not suites or j.suite in suites]
    if not found:
        only = f" for suite(s) {list(suites)}" if suites else ""
        raise LookupError(f"run {run_id} holds no judge record{only} (nor do its child runs): "
                          "only suites evaluated with a judge can be rejudged")
    out = []
    for judged in found:
        with tempfile.TemporaryDirectory() as tmp:
            record = JudgeRecord.read(download_record(judged, tmp))
        base = judges.get(judged.suite)
        source = "suite config" if base is not None else "record"
        spec = judge_spec_for(base or record.spec, overrides)
        if spec is not (base or record.spec):
            source = "flags"
        metrics, new = replay(record, spec, cache_dir)
        prefix = metric_prefix(judged.suite)
        with registry.start_run(f"rejudge-{judged.suite}", parent_run_id=judged.run_id,
                                tags={"stage": "evaluate", "suite": judged.suite,
                                      "rejudge_of": judged.run_id}) as new_run:
            registry.log_params({"judge": spec.model_dump(mode="json"),
                                 "rejudge_of": judged.run_id, "judge_from": source})
            registry.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})
            log_judge_record(new, judged.suite)
        out.append(RejudgeOutcome(
            judged.suite, judged.run_id, new_run, new.judge["model_id"], source,
            {f"{prefix}{k}": v for k, v in metrics.items()},
            {f"{prefix}{k}": v for k, v in record.summary["metrics"].items()}, new.summary))
    return out
