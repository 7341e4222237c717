"""LAVE-style VQA judge (Mañas et al., "Improving Automatic VQA Evaluation Using Large
Language Models", AAAI 2024): the prompt, the parsing of ratings, the judging loop and its
on-disk cache. The backends (a local causal LM, an OpenAI-compatible endpoint) are in
judge_backends.py, the endpoint's hardened HTTP client in judge_http.py, the frozen records of
a judged suite in judge_records.py.

The judge reads the question, the reference answers and the candidate answer, writes a short
rationale and ends with ``So rating=N`` on LAVE's scale: 1 incorrect or irrelevant,
2 ambiguous or incomplete, 3 correct. A rating maps to a score ``(N - 1) / 2`` in
{0, 0.5, 1}. As in LAVE, a candidate that equals a reference after the VQA answer
normalization is rated 3 without asking the model. Judgments are cached on disk under a hash
of (backend, judge model id, prompt), so rerunning an evaluation asks the model only about new
answers. ``JudgeBase.judge_run`` reports the token counts of every judgment and stops cleanly
at a budget (calls or tokens) or at the run's deadline, keeping the judgments made so far.

A judge is only as good as its model: the tiny randomly initialised Llama of the tests shows
that the path runs end to end offline and that outputs are parsed right, not that its
ratings mean anything. Use an instruction-tuned LM of a few billion parameters or more
for numbers worth reporting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from components.evaluation.judge_http import JudgeDeadline, JudgeError
from components.evaluation.vqa_metrics import normalize_answer

__all__ = [
    "DEMONSTRATIONS",
    "INSTRUCTIONS",
    "Completion",
    "JudgeBase",
    "JudgeBudget",
    "JudgeCache",
    "JudgeDeadline",
    "JudgeError",
    "JudgeItem",
    "JudgeRun",
    "Judgment",
    "directory_fingerprint",
    "estimate_tokens",
    "judge_summary",
    "lave_prompt",
    "parse_rating",
    "rating_score",
    "weights_digest",
]

INSTRUCTIONS = (
    "You are given a question, a set of gold-standard reference answers written by experts, "
    "and a candidate answer. Please rate the accuracy of the candidate answer for the question "
    "considering the reference answers. Use a scale of 1-3, with 1 indicating an incorrect or "
    "irrelevant answer, 2 indicating an ambiguous or incomplete answer, and 3 indicating a "
    "correct answer. Give the rationale before rating.\n\n"
    "THIS IS VERY IMPORTANT: A binary question should only be answered with 'yes' or 'no', "
    "otherwise the candidate answer is incorrect."
)

# (question, references, candidate, output): one demonstration per rating, LAVE's format.
DEMONSTRATIONS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("What colour is the circle?", ("red",), "blue",
     "The candidate answer names a different colour than the reference answers. So rating=1"),
    ("Where is the green square?", ("bottom left",), "at the bottom",
     "The candidate answer gives the right half of the image but not the side, so it is "
     "incomplete. So rating=2"),
    ("How many triangles are there?", ("2", "two"), "there are two triangles",
     "The candidate answer gives the same number as the reference answers. So rating=3"),
)

_RATING = re.compile(r"rating\s*(?:=|:|is|of)?\s*\**\s*([1-3])(?![0-9]|\.[0-9])", re.IGNORECASE)
_BARE = re.compile(r"^\W*([1-3])\W*$")


@dataclass(frozen=True)
class JudgeItem:
    """One answer to judge."""

    question: str
    references: tuple[str, ...]
    prediction: str


@dataclass(frozen=True)
class Judgment:
    """A rating in 1..3 (None when the output could not be read), its score and provenance,
    with the prompt the model was given and the tokens of its call (None: exact match)."""

    rating: int | None
    output: str
    source: str  # "exact_match", "record" (a stored judgment), "cache" or "model"
    prompt: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_from: str | None = None  # "tokenizer", "usage" (the endpoint's) or "estimate"

    @property
    def score(self) -> float | None:
        return rating_score(self.rating)


class Completion(NamedTuple):
    """One model answer and the tokens it took."""

    output: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_from: str | None = None

    def judgment(self, source: str, prompt: str) -> Judgment:
        return Judgment(parse_rating(self.output), self.output, source, prompt,
                        self.prompt_tokens, self.completion_tokens, self.tokens_from)


@dataclass(frozen=True)
class JudgeBudget:
    """At most ``max_calls`` new model calls and ``max_tokens`` (prompt + completion) tokens in
    a judge run; None: no limit. A call is made only when its prompt and ``max_new_tokens``
    fit in what is left of ``max_tokens``."""

    max_calls: int | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        if (self.max_calls is not None and self.max_calls < 0) or (
                self.max_tokens is not None and self.max_tokens < 0):
            raise ValueError("a judge budget must not be negative")


@dataclass
class JudgeRun:
    """A judge run: a judgment per item (None: not judged, the run stopped first), the new
    model calls and their tokens, and why the run stopped early (None: it did not)."""

    judgments: list[Judgment | None]
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: str | None = None
    seconds: float = 0.0
    counted: set[str] = field(default_factory=set)  # where the token counts came from

    @property
    def judged(self) -> list[Judgment]:
        return [j for j in self.judgments if j is not None]


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) where no tokenizer or usage is at hand."""
    return max(1, math.ceil(len(text) / 4))


def rating_score(rating: int | None) -> float | None:
    """LAVE's rating 1..3 as a score in {0, 0.5, 1}."""
    if rating is None:
        return None
    if rating not in (1, 2, 3):
        raise ValueError(f"rating must be 1, 2 or 3, got {rating!r}")
    return (rating - 1) / 2


def parse_rating(output: str) -> int | None:
    """The rating a judge output ends with: the last ``rating=N`` / ``Rating: N`` (N in 1..3),
    or an output that is only the digit; None when there is none."""
    found = _RATING.findall(output)
    if found:
        return int(found[-1])
    bare = _BARE.match(output)
    return int(bare[1]) if bare else None


def _quote(texts: Sequence[str]) -> str:
    return ", ".join(f"'{t}'" for t in texts)


def lave_prompt(item: JudgeItem) -> str:
    """Instructions, the demonstrations and the item, ending with ``Output:``."""
    def block(question: str, refs: Sequence[str], candidate: str) -> str:
        return (f"Question: '{question}'\nReference answers: {_quote(refs)}\n"
                f"Candidate answer: '{candidate}'\nOutput:")

    parts = [INSTRUCTIONS]
    parts += [f"{block(q, r, c)} {out}" for q, r, c, out in DEMONSTRATIONS]
    refs = list(dict.fromkeys(item.references))
    parts.append(block(item.question, refs, item.prediction))
    return "\n\n".join(parts)


def _check(item: JudgeItem, index: int) -> None:
    if not isinstance(item.question, str) or not isinstance(item.prediction, str):
        raise ValueError(f"judge item {index}: question and prediction must be strings")
    if not item.references or not all(isinstance(r, str) for r in item.references):
        raise ValueError(f"judge item {index}: references must be a non-empty list of strings")


class JudgeCache:
    """One JSON file per (model id, prompt), named by their SHA-256; written atomically."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(model_id: str, prompt: str) -> str:
        return hashlib.sha256(json.dumps([model_id, prompt]).encode()).hexdigest()

    def path(self, model_id: str, prompt: str) -> Path:
        key = self.key(model_id, prompt)
        return self.directory / key[:2] / f"{key}.json"

    def entry(self, model_id: str, prompt: str) -> dict | None:
        """The stored entry (``output`` and, when recorded, its token counts) or None."""
        path = self.path(model_id, prompt)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"judge cache entry {path}: unreadable ({exc}); delete it") from exc
        if entry.get("model_id") != model_id or entry.get("prompt") != prompt:
            raise ValueError(f"judge cache entry {path}: holds another (model id, prompt)")
        return entry

    def get(self, model_id: str, prompt: str) -> str | None:
        entry = self.entry(model_id, prompt)
        return None if entry is None else entry["output"]

    def completion(self, model_id: str, prompt: str) -> Completion | None:
        entry = self.entry(model_id, prompt)
        if entry is None:
            return None
        return Completion(entry["output"], entry.get("prompt_tokens"),
                          entry.get("completion_tokens"), entry.get("tokens_from"))

    def put(self, model_id: str, prompt: str, output: str | Completion) -> None:
        c = output if isinstance(output, Completion) else Completion(output)
        path = self.path(model_id, prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps({"model_id": model_id, "prompt": prompt, "output": c.output,
                                   "prompt_tokens": c.prompt_tokens,
                                   "completion_tokens": c.completion_tokens,
                                   "tokens_from": c.tokens_from}), encoding="utf-8")
        os.replace(tmp, path)


def directory_fingerprint(directory: Path) -> str:
    """Hash of the names, sizes and modification times of a directory's files (cheap; changes
    when the weights are rewritten)."""
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(directory)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_digest(directory: Path) -> str:
    """SHA-256 of the names and bytes of a model directory's weight files (all its files when
    it has none of ``WEIGHT_SUFFIXES``): the same weights give the same digest anywhere."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES] or files
    h = hashlib.sha256()
    for p in weights:
        h.update(f"{p.relative_to(directory)}\n".encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _stop_message(what: str, judged: int, total: int) -> str:
    return f"{what} after {judged} of {total} items; partial results kept"


class JudgeBase:
    """The LAVE judging loop shared by the backends. A backend sets ``backend``, calls
    ``_settings`` and implements ``render`` (the exact text the model is given, which is also
    the cache key) and ``generate``."""

    backend: str
    model_id: str
    cache: JudgeCache | None
    max_new_tokens: int
    batch_size: int
    exact_match_shortcut: bool
    deadline_s: float | None
    _deadline: float | None = None  # time.monotonic() instant of the running judge run

    def _settings(self, model_id: str, cache_dir: str | Path | None, max_new_tokens: int,
                  batch_size: int, exact_match_shortcut: bool,
                  deadline_s: float | None = None) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.model_id = model_id
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.exact_match_shortcut = exact_match_shortcut
        self.deadline_s = deadline_s

    @property
    def cache_id(self) -> str:
        """The judge's identity in the cache: backend and model id."""
        return f"{self.backend}:{self.model_id}"

    def render(self, item: JudgeItem) -> str:
        raise NotImplementedError

    def generate(self, prompts: Sequence[str]) -> list[Completion]:
        raise NotImplementedError

    def prompt_tokens(self, prompt: str) -> int:
        """The tokens of a rendered prompt (before it is sent: the token budget's check)."""
        return estimate_tokens(prompt)

    def describe(self) -> dict:
        """What identifies this judge in a record: backend, cache id, settings, prompt template."""
        template = lave_prompt(JudgeItem("{question}", ("{references}",), "{candidate}"))
        return {"backend": self.backend, "model_id": self.cache_id,
                "max_new_tokens": self.max_new_tokens,
                "exact_match_shortcut": self.exact_match_shortcut, "prompt_template": template}

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """A judgment per item (see ``judge_run``); JudgeError when the deadline stops it."""
        run = self.judge_run(items)
        if run.stopped is not None:
            raise JudgeError(run.stopped)
        return run.judged

    def _admit(self, prompts: Sequence[str], budget: JudgeBudget, run: JudgeRun) -> list[str]:
        """The leading prompts the budget still allows."""
        if budget.max_calls is not None:
            prompts = prompts[: max(0, budget.max_calls - run.calls)]
        if budget.max_tokens is None:
            return list(prompts)
        used, out = run.prompt_tokens + run.completion_tokens, []
        for prompt in prompts:
            used += self.prompt_tokens(prompt) + self.max_new_tokens
            if used > budget.max_tokens:
                break
            out.append(prompt)
        return out

    def judge_run(self, items: Sequence[JudgeItem], budget: JudgeBudget | None = None,
                  stored: Mapping[str, Completion] | None = None) -> JudgeRun:
        """A judgment per item: exact matches short-circuit, then ``stored`` judgments (prompt
        -> completion, e.g. of an earlier record of this judge), the cache, then the model
        (asked ``batch_size`` prompts at a time; each batch is cached as soon as it returns).
        New calls stop at ``budget`` or at the deadline: items left are None."""
        start = time.monotonic()
        self._deadline = None if self.deadline_s is None else start + self.deadline_s
        budget = budget or JudgeBudget()
        run = JudgeRun([None] * len(items))
        todo: dict[str, list[int]] = {}  # rendered prompt -> item indices
        for i, item in enumerate(items):
            _check(item, i)
            if self.exact_match_shortcut:
                pred = normalize_answer(item.prediction)
                if pred and any(pred == normalize_answer(r) for r in item.references):
                    run.judgments[i] = Judgment(3, "", "exact_match")
                    continue
            prompt = self.render(item)
            if stored is not None and prompt in stored:
                run.judgments[i] = stored[prompt].judgment("record", prompt)
                continue
            cached = self.cache.completion(self.cache_id, prompt) if self.cache else None
            if cached is not None:
                run.judgments[i] = cached.judgment("cache", prompt)
            else:
                todo.setdefault(prompt, []).append(i)
        prompts, done = list(todo), 0
        while done < len(prompts) and run.stopped is None:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                run.stopped = f"judge deadline of {self.deadline_s:g}s passed"
                break
            chunk = self._admit(prompts[done : done + self.batch_size], budget, run)
            if not chunk:
                run.stopped = (f"judge budget of {budget.max_calls} calls reached"
                               if budget.max_calls is not None and run.calls >= budget.max_calls
                               else f"judge budget of {budget.max_tokens} tokens reached")
                break
            try:
                completions: list[Completion | None] = list(self.generate(chunk))
            except JudgeDeadline as exc:
                completions = list(exc.done or [None] * len(chunk))
                run.stopped = f"judge deadline of {self.deadline_s:g}s passed"
            for prompt, c in zip(chunk, completions, strict=True):
                if c is None:
                    continue
                if self.cache:
                    self.cache.put(self.cache_id, prompt, c)
                run.calls += 1
                run.prompt_tokens += c.prompt_tokens or 0
                run.completion_tokens += c.completion_tokens or 0
                run.counted.add(c.tokens_from or "unknown")
                for i in todo[prompt]:
                    run.judgments[i] = c.judgment("model", prompt)
            done += len(chunk)
        if run.stopped is not None:
            run.stopped = _stop_message(run.stopped, len(run.judged), len(items))
        run.seconds = time.monotonic() - start
        return run


def judge_summary(judgments: Sequence[Judgment]) -> dict[str, float]:
    """``score``: mean LAVE score with unreadable outputs counted as 0; ``unparsed``: their
    share; ``exact_match``: the share rated by the short-circuit."""
    if not judgments:
        raise ValueError("no judgments to summarise")
    n = len(judgments)
    return {
        "score": sum(j.score or 0.0 for j in judgments) / n,
        "unparsed": sum(j.rating is None for j in judgments) / n,
        "exact_match": sum(j.source == "exact_match" for j in judgments) / n,
    }
