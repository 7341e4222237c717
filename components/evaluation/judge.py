"""LAVE-style VQA judge (Mañas et al., "Improving Automatic VQA Evaluation Using Large
Language Models", AAAI 2024) on a pluggable backend: a local causal LM (``LocalJudge``, no API
key, no network) or any OpenAI-compatible chat-completions endpoint (``OpenAIJudge``: OpenAI,
vLLM, llama.cpp server, Ollama, ...).

The judge reads the question, the reference answers and the candidate answer, writes a short
rationale and ends with ``So rating=N`` on LAVE's scale: 1 incorrect or irrelevant,
2 ambiguous or incomplete, 3 correct. A rating maps to a score ``(N - 1) / 2`` in
{0, 0.5, 1}. As in LAVE, a candidate that equals a reference after the VQA answer
normalization is rated 3 without asking the model.

Any ``AutoModelForCausalLM`` directory serves as a local judge (its tokenizer's chat template is
used when it has one). An HTTP judge sends the same LAVE prompt as one user message with
temperature 0 (stdlib ``urllib`` only; an API key is read from an environment variable when
one is named and set, never required). Judgments of either backend are cached on disk under a
hash of (backend, judge model id, prompt), so rerunning an evaluation asks the model only about
new answers.

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
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.vqa_metrics import normalize_answer

__all__ = [
    "DEMONSTRATIONS",
    "INSTRUCTIONS",
    "JUDGE_BACKENDS",
    "JudgeCache",
    "JudgeError",
    "JudgeItem",
    "Judgment",
    "LocalJudge",
    "OpenAIJudge",
    "judge_summary",
    "lave_prompt",
    "make_judge",
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


class JudgeError(RuntimeError):
    """A judge backend failed to answer (endpoint unreachable, HTTP error, malformed reply)."""


class _Judge:
    """The LAVE judging loop shared by the backends. A backend sets ``backend``, calls
    ``_settings`` and implements ``render`` (the exact text the model is given, which is also
    the cache key) and ``generate``."""

    backend: str
    model_id: str
    cache: JudgeCache | None
    max_new_tokens: int
    batch_size: int
    exact_match_shortcut: bool

    def _settings(self, model_id: str, cache_dir: str | Path | None, max_new_tokens: int,
                  batch_size: int, exact_match_shortcut: bool) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        self.model_id = model_id
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.exact_match_shortcut = exact_match_shortcut

    @property
    def cache_id(self) -> str:
        """The judge's identity in the cache: backend and model id."""
        return f"{self.backend}:{self.model_id}"

    def render(self, item: JudgeItem) -> str:
        raise NotImplementedError

    def generate(self, prompts: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """A judgment per item: exact matches short-circuit, then the cache, then the model
        (asked ``batch_size`` prompts at a time; each batch is cached as soon as it returns)."""
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
            cached = self.cache.get(self.cache_id, prompt) if self.cache else None
            if cached is not None:
                results[i] = Judgment(parse_rating(cached), cached, "cache")
            else:
                todo.setdefault(prompt, []).append(i)
        prompts = list(todo)
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            for prompt, output in zip(chunk, self.generate(chunk), strict=True):
                if self.cache:
                    self.cache.put(self.cache_id, prompt, output)
                for i in todo[prompt]:
                    results[i] = Judgment(parse_rating(output), output, "model")
        return [r for r in results if r is not None]


class LocalJudge(_Judge):
    """A LAVE judge backed by a local ``AutoModelForCausalLM`` directory, greedy decoding.

    ``model_id`` names the judge in the cache key; by default it is the directory's resolved
    path, a fingerprint of its files and the generation settings.
    """

    backend = "local"

    def __init__(self, model_dir: str | Path, *, cache_dir: str | Path | None = None,
                 model_id: str | None = None, max_new_tokens: int = 48, batch_size: int = 8,
                 exact_match_shortcut: bool = True):
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"judge model: {self.model_dir} is not a transformers model "
                                    "directory (no config.json)")
        self._settings(model_id or (f"{self.model_dir}@{directory_fingerprint(self.model_dir)}"
                                    f"|greedy|max_new_tokens={max_new_tokens}"),
                       cache_dir, max_new_tokens, batch_size, exact_match_shortcut)
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


class OpenAIJudge(_Judge):
    """A LAVE judge behind an OpenAI-compatible endpoint: ``POST {base_url}/chat/completions``
    with the LAVE prompt as one user message, temperature 0 and ``max_tokens``.

    ``base_url`` is the API root (e.g. ``https://api.openai.com/v1`` or
    ``http://127.0.0.1:8000/v1``). ``api_key_env`` names an environment variable holding a key
    sent as ``Authorization: Bearer``; when it is unset (or not named) no key is sent.
    ``model_id`` names the judge in the cache key; by default the endpoint, the model name and
    the generation settings. ``batch_size`` requests run concurrently.
    """

    backend = "openai"

    def __init__(self, model: str, base_url: str, *, cache_dir: str | Path | None = None,
                 model_id: str | None = None, max_new_tokens: int = 48, batch_size: int = 8,
                 exact_match_shortcut: bool = True, api_key_env: str | None = None,
                 timeout_s: float = 60.0):
        if not model:
            raise ValueError("judge model: an OpenAI-compatible judge needs a model name")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/chat/completions"
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self._settings(model_id or f"{self.base_url}|{model}|temperature=0|max_tokens={max_new_tokens}",
                       cache_dir, max_new_tokens, batch_size, exact_match_shortcut)

    def render(self, item: JudgeItem) -> str:
        """The user message sent (the endpoint applies the model's chat template)."""
        return lave_prompt(item)

    def request_body(self, prompt: str) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.max_new_tokens}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def complete(self, prompt: str) -> str:
        """One chat completion: the first choice's message content, stripped."""
        data = json.dumps(self.request_body(prompt)).encode()
        request = urllib.request.Request(self.endpoint, data=data, headers=self._headers(),
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace").strip() if exc.fp else ""
            raise JudgeError(f"judge endpoint {self.endpoint}: HTTP {exc.code} {exc.reason}"
                             + (f": {detail}" if detail else "")) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(f"judge endpoint {self.endpoint}: request failed ({reason})") from exc
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: reply is not a chat completion "
                             f"({raw[:200]!r})") from exc
        if content is not None and not isinstance(content, str):
            raise JudgeError(f"judge endpoint {self.endpoint}: message content is not text")
        return (content or "").strip()

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Completions of the prompts, up to ``batch_size`` requests at a time."""
        if len(prompts) <= 1:
            return [self.complete(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(prompts))) as pool:
            return list(pool.map(self.complete, prompts))


JUDGE_BACKENDS = ("local", "openai")


def make_judge(backend: str, model: str, *, base_url: str | None = None,
               api_key_env: str | None = None, timeout_s: float = 60.0,
               **kwargs) -> LocalJudge | OpenAIJudge:
    """A judge of the named backend: ``local`` (``model`` is a model directory) or ``openai``
    (``model`` is the endpoint's model name, ``base_url`` its API root). ``kwargs`` go to
    both (``cache_dir``, ``model_id``, ``max_new_tokens``, ``batch_size``,
    ``exact_match_shortcut``)."""
    if backend == "local":
        if base_url is not None or api_key_env is not None:
            raise ValueError("base_url and api_key_env apply to the openai judge backend only")
        return LocalJudge(model, **kwargs)
    if backend == "openai":
        if base_url is None:
            raise ValueError("the openai judge backend needs a base_url")
        return OpenAIJudge(model, base_url, api_key_env=api_key_env, timeout_s=timeout_s,
                           **kwargs)
    raise ValueError(f"unknown judge backend {backend!r}; expected one of {JUDGE_BACKENDS}")


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
