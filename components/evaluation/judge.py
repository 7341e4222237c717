"""LAVE-style VQA judge (Mañas et al., "Improving Automatic VQA Evaluation Using Large
Language Models", AAAI 2024) with a local causal LM: no API key, no network.

The judge reads the question, the reference answers and the candidate answer, writes a short
rationale and ends with ``So rating=N`` on LAVE's scale: 1 incorrect or irrelevant,
2 ambiguous or incomplete, 3 correct. A rating maps to a score ``(N - 1) / 2`` in
{0, 0.5, 1}. As in LAVE, a candidate that equals a reference after the VQA answer
normalization is rated 3 without asking the model.

Any ``AutoModelForCausalLM`` directory serves as the judge (its tokenizer's chat template is
used when it has one). Judgments are cached on disk under a hash of (judge model id,
prompt), so rerunning an evaluation asks the model only about new answers.

A judge is only as good as its model: the tiny randomly initialised Llama of the tests shows
that the path runs end to end offline and that outputs are parsed right, not that its
ratings mean anything. Use an instruction-tuned LM of a few billion parameters or more
for numbers worth reporting.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.vqa_metrics import normalize_answer

__all__ = [
    "DEMONSTRATIONS",
    "INSTRUCTIONS",
    "JudgeCache",
    "JudgeItem",
    "Judgment",
    "LocalJudge",
    "judge_summary",
    "lave_prompt",
    "parse_rating",
    "rating_score",
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
    """A rating in 1..3 (None when the output could not be read), its score and provenance."""

    rating: int | None
    output: str
    source: str  # "exact_match", "cache" or "model"

    @property
    def score(self) -> float | None:
        return rating_score(self.rating)


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

    def get(self, model_id: str, prompt: str) -> str | None:
        path = self.path(model_id, prompt)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"judge cache entry {path}: unreadable ({exc}); delete it") from exc
        if entry.get("model_id") != model_id or entry.get("prompt") != prompt:
            raise ValueError(f"judge cache entry {path}: holds another (model id, prompt)")
        return entry["output"]

    def put(self, model_id: str, prompt: str, output: str) -> None:
        path = self.path(model_id, prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps({"model_id": model_id, "prompt": prompt, "output": output}),
                       encoding="utf-8")
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


class LocalJudge:
    """A LAVE judge backed by a local ``AutoModelForCausalLM`` directory, greedy decoding.

    ``model_id`` names the judge in the cache key; by default it is the directory's resolved
    path, a fingerprint of its files and the generation settings.
    """

    def __init__(self, model_dir: str | Path, *, cache_dir: str | Path | None = None,
                 model_id: str | None = None, max_new_tokens: int = 48, batch_size: int = 8,
                 exact_match_shortcut: bool = True):
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"judge model: {self.model_dir} is not a transformers model "
                                    "directory (no config.json)")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.exact_match_shortcut = exact_match_shortcut
        self.model_id = model_id or (f"{self.model_dir}@{directory_fingerprint(self.model_dir)}"
                                     f"|greedy|max_new_tokens={max_new_tokens}")
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self._model = None
        self._tokenizer = None

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
        return self._tokenizer

    def _load_model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        return self._model

    def render(self, item: JudgeItem) -> str:
        """The exact text the model is given (chat template applied when it has one)."""
        tokenizer = self._load_tokenizer()
        text = lave_prompt(item)
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 tokenize=False, add_generation_prompt=True)
        return text

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of rendered prompts, in batches."""
        import torch

        model, tokenizer = self._load_model(), self._load_tokenizer()
        templated = bool(tokenizer.chat_template)  # the template writes its own bos
        outputs: list[str] = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                chunk = list(prompts[start : start + self.batch_size])
                batch = tokenizer(chunk, return_tensors="pt", padding=True,
                                  add_special_tokens=not templated)
                out = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                new = out[:, batch["input_ids"].shape[1] :]
                outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return outputs

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """A judgment per item: exact matches short-circuit, then the cache, then the model."""
        results: list[Judgment | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}  # rendered prompt -> item indices
        for i, item in enumerate(items):
            _check(item, i)
            if self.exact_match_shortcut:
                pred = normalize_answer(item.prediction)
                if pred and any(pred == normalize_answer(r) for r in item.references):
                    results[i] = Judgment(3, "", "exact_match")
                    continue
            prompt = self.render(item)
            cached = self.cache.get(self.model_id, prompt) if self.cache else None
            if cached is not None:
                results[i] = Judgment(parse_rating(cached), cached, "cache")
            else:
                todo.setdefault(prompt, []).append(i)
        prompts = list(todo)
        for prompt, output in zip(prompts, self.generate(prompts) if prompts else [], strict=True):
            if self.cache:
                self.cache.put(self.model_id, prompt, output)
            for i in todo[prompt]:
                results[i] = Judgment(parse_rating(output), output, "model")
        return [r for r in results if r is not None]


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
