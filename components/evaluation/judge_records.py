"""Frozen records of a judged suite, so its judge scores can be audited and replayed without
generating again. A record is three files (the evaluate stage logs them as MLflow artifacts
under ``<suite>/judge/``):

* ``predictions.jsonl``: the raw predictions judged (key, question, references, candidate);
* ``judge.json``: the judge (backend, model, cache id, prompt template, weights digest or
  endpoint), its suite settings, and the run's summary: items judged, new calls, their tokens,
  the estimated cost (``price_per_1k_tokens`` of the suite), why it stopped early if it did;
* ``judgments.jsonl``: per item its prompt, raw output, rating, source and token counts.

A judge budget (``max_calls`` / ``max_tokens`` of the suite's judge) or its deadline stops a
run cleanly: items beyond it are not judged, scores are over the judged items and
``judge_judged`` counts them. ``replay`` judges a record's predictions again under any judge;
under the record's own judge the stored judgments answer, so it makes no new call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.judge import (
    Completion,
    JudgeBase,
    JudgeBudget,
    JudgeItem,
    JudgeRun,
    judge_summary,
)
from components.evaluation.suites import JudgeSpec

__all__ = ["RECORD_FILES", "JudgeRecord", "build_judge", "judge_predictions", "judge_rows",
           "replay"]

RECORD_FILES = ("judge.json", "predictions.jsonl", "judgments.jsonl")
NOT_JUDGED = "not_judged"


@dataclass
class JudgeRecord:
    """The three files of a judged suite, in memory."""

    judge: dict  # judge.json
    predictions: list[dict]  # predictions.jsonl
    judgments: list[dict]  # judgments.jsonl, one per prediction

    @property
    def summary(self) -> dict:
        return self.judge["summary"]

    @property
    def spec(self) -> JudgeSpec:
        """The judge settings the record was made with."""
        return JudgeSpec.model_validate(self.judge["spec"])

    def stored(self) -> dict[str, Completion]:
        """Prompt -> the judge's completion, for every judgment a model made."""
        return {j["prompt"]: Completion(j["output"], j.get("prompt_tokens"),
                                        j.get("completion_tokens"), j.get("tokens_from"))
                for j in self.judgments if j["source"] not in (NOT_JUDGED, "exact_match")}

    def write(self, folder: str | Path) -> list[Path]:
        """Write the three files into ``folder``; their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / name for name in RECORD_FILES]
        paths[0].write_text(json.dumps(self.judge, indent=1, ensure_ascii=False), encoding="utf-8")
        for path, rows in zip(paths[1:], (self.predictions, self.judgments), strict=True):
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                            encoding="utf-8")
        return paths

    @classmethod
    def read(cls, folder: str | Path) -> JudgeRecord:
        """A record written by ``write``; ValueError when a file is missing or malformed."""
        folder = Path(folder)
        try:
            judge = json.loads((folder / RECORD_FILES[0]).read_text(encoding="utf-8"))
            rows = [[json.loads(line) for line in (folder / name).read_text(encoding="utf-8")
                     .splitlines() if line.strip()] for name in RECORD_FILES[1:]]
        except (OSError, ValueError) as exc:
            raise ValueError(f"judge record {folder}: unreadable ({exc})") from exc
        record = cls(judge, *rows)
        if len(record.predictions) != len(record.judgments) or "spec" not in judge:
            raise ValueError(f"judge record {folder}: predictions and judgments do not match")
        return record


def build_judge(spec: JudgeSpec, cache_dir: str | Path) -> JudgeBase:
    """The judge a suite's ``JudgeSpec`` names (its cache: ``spec.cache_dir`` or ``cache_dir``)."""
    from components.evaluation.judge_backends import make_judge

    return make_judge(spec.backend, spec.model, base_url=spec.base_url,
                      api_key_env=spec.api_key_env, cache_dir=spec.cache_dir or str(cache_dir),
                      max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                      exact_match_shortcut=spec.exact_match_shortcut, deadline_s=spec.deadline_s,
                      timeout_s=spec.timeout_s, max_attempts=spec.max_attempts,
                      max_response_bytes=spec.max_response_bytes)


def _metrics(run: JudgeRun) -> dict[str, float]:
    judged = run.judged
    metrics = {f"judge_{k}": v for k, v in judge_summary(judged).items()} if judged else {}
    metrics["judge_judged"] = float(len(judged))
    return metrics


def _judgment_rows(predictions: Sequence[dict], run: JudgeRun) -> list[dict]:
    rows = []
    for i, (p, j) in enumerate(zip(predictions, run.judgments, strict=True)):
        row = {"index": i, "key": p["key"]}
        if j is None:
            rows.append({**row, "source": NOT_JUDGED, "rating": None})
            continue
        rows.append({**row, "source": j.source, "prompt": j.prompt, "output": j.output,
                     "rating": j.rating, "score": j.score, "prompt_tokens": j.prompt_tokens,
                     "completion_tokens": j.completion_tokens, "tokens_from": j.tokens_from})
    return rows


def judge_predictions(spec: JudgeSpec, predictions: Sequence[dict], cache_dir: str | Path, *,
                      stored: Mapping[str, Completion] | None = None,
                      judge: JudgeBase | None = None) -> tuple[dict[str, float], JudgeRecord]:
    """Judge ``predictions`` (dicts: key, question, references, candidate) under ``spec``
    (budget and deadline included): ``judge_*`` metrics over the judged items and the record."""
    judge = judge or build_judge(spec, cache_dir)
    items = [JudgeItem(p["question"], tuple(p["references"]), p["candidate"])
             for p in predictions]
    run = judge.judge_run(items, JudgeBudget(spec.max_calls, spec.max_tokens), stored)
    metrics = _metrics(run)
    tokens = run.prompt_tokens + run.completion_tokens
    summary = {"items": len(items), "judged": len(run.judged), "calls": run.calls,
               "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
               "tokens_from": sorted(run.counted),
               "price_per_1k_tokens": spec.price_per_1k_tokens,
               "estimated_cost": tokens / 1000 * spec.price_per_1k_tokens,
               "budget": {"max_calls": spec.max_calls, "max_tokens": spec.max_tokens},
               "deadline_s": spec.deadline_s, "stopped": run.stopped,
               "seconds": round(run.seconds, 3), "metrics": metrics}
    record = JudgeRecord({**judge.describe(), "spec": spec.model_dump(mode="json"),
                          "summary": summary}, [dict(p) for p in predictions],
                         _judgment_rows(predictions, run))
    return metrics, record


def judge_rows(spec: JudgeSpec, rows: list[dict],
               cache_dir: str | Path) -> tuple[dict[str, float], JudgeRecord | None]:
    """Judge a suite's open-answer rows (captions are left to caption metrics): adds
    ``judge_rating`` to each judged row; the metrics and the record (None: nothing to judge)."""
    judged = [r for r in rows if r.get("task") != "caption"]
    if not judged:
        return {}, None
    predictions = [{"key": str(r.get("key", i)), "question": r["question"],
                    "references": list(r["answers"]), "candidate": r["prediction"]}
                   for i, r in enumerate(judged)]
    metrics, record = judge_predictions(spec, predictions, cache_dir)
    for row, j in zip(judged, record.judgments, strict=True):
        if j["source"] != NOT_JUDGED:
            row["judge_rating"] = j["rating"]
    return metrics, record


def replay(record: JudgeRecord, spec: JudgeSpec,
           cache_dir: str | Path) -> tuple[dict[str, float], JudgeRecord]:
    """Judge a record's predictions again under ``spec``'s judge, without generating them
    again. The record's judgments answer when that judge is the record's (same cache id), so
    replaying a judge makes no new call; another judge is asked (through its cache)."""
    judge = build_judge(spec, cache_dir)
    same = record.judge.get("model_id") == judge.cache_id
    return judge_predictions(spec, record.predictions, cache_dir,
                             stored=record.stored() if same else None, judge=judge)
