"""The judge's backends: a local causal LM (``LocalJudge``, no API key, no network) and any
OpenAI-compatible chat-completions endpoint (``OpenAIJudge``: OpenAI, vLLM, llama.cpp server,
Ollama, ...) through the hardened client of judge_http.py; ``make_judge`` picks one. The LAVE
prompt, the judging loop and the cache: judge.py."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from components.evaluation.judge import (
    Completion,
    JudgeBase,
    JudgeItem,
    directory_fingerprint,
    estimate_tokens,
    lave_prompt,
    weights_digest,
)
from components.evaluation.judge_http import (
    HttpPolicy,
    JudgeDeadline,
    JudgeError,
    check_base_url,
    check_key_env,
    post_json,
)

__all__ = ["HTTP_SETTINGS", "JUDGE_BACKENDS", "LocalJudge", "OpenAIJudge", "make_judge"]

_WEIGHTS: dict[tuple[str, str], str] = {}  # (model dir, fingerprint) -> weights digest


class LocalJudge(JudgeBase):
    """A LAVE judge backed by a local ``AutoModelForCausalLM`` directory, greedy decoding.

    ``model_id`` names the judge in the cache key; by default it is the directory's resolved
    path, a fingerprint of its files and the generation settings.
    """

    backend = "local"

    def __init__(self, model_dir: str | Path, *, cache_dir: str | Path | None = None,
                 model_id: str | None = None, max_new_tokens: int = 48, batch_size: int = 8,
                 exact_match_shortcut: bool = True, deadline_s: float | None = None):
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"judge model: {self.model_dir} is not a transformers model "
                                    "directory (no config.json)")
        self.fingerprint = directory_fingerprint(self.model_dir)
        self._settings(model_id or (f"{self.model_dir}@{self.fingerprint}"
                                    f"|greedy|max_new_tokens={max_new_tokens}"),
                       cache_dir, max_new_tokens, batch_size, exact_match_shortcut, deadline_s)
        self._model = None
        self._tokenizer = None

    def describe(self) -> dict:
        """The base description, the model directory, its fingerprint, the SHA-256 of its
        weights and its chat template."""
        key = (str(self.model_dir), self.fingerprint)  # hashed once per process and version
        if key not in _WEIGHTS:
            _WEIGHTS[key] = weights_digest(self.model_dir)
        return {**super().describe(), "model": str(self.model_dir), "decoding": "greedy",
                "fingerprint": self.fingerprint, "weights_sha256": _WEIGHTS[key],
                "chat_template": self._load_tokenizer().chat_template}

    def prompt_tokens(self, prompt: str) -> int:
        tokenizer = self._load_tokenizer()
        return len(tokenizer(prompt, add_special_tokens=not tokenizer.chat_template)["input_ids"])

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

    def generate(self, prompts: Sequence[str]) -> list[Completion]:
        """Greedy continuations of rendered prompts, in batches, with their token counts
        (prompt: its tokens; completion: the new tokens up to and with the first eos)."""
        import torch

        model, tokenizer = self._load_model(), self._load_tokenizer()
        templated = bool(tokenizer.chat_template)  # the template writes its own bos
        eos = tokenizer.eos_token_id
        outputs: list[Completion] = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                chunk = list(prompts[start : start + self.batch_size])
                batch = tokenizer(chunk, return_tensors="pt", padding=True,
                                  add_special_tokens=not templated)
                out = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
                new = out[:, batch["input_ids"].shape[1] :]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for text, ids, mask in zip(texts, new.tolist(), batch["attention_mask"],
                                           strict=True):
                    used = ids.index(eos) + 1 if eos in ids else len(ids)
                    outputs.append(Completion(text.strip(), int(mask.sum()), used, "tokenizer"))
        return outputs


class OpenAIJudge(JudgeBase):
    """A LAVE judge behind an OpenAI-compatible endpoint: ``POST {base_url}/chat/completions``
    with the LAVE prompt as one user message, temperature 0 and ``max_tokens``.

    ``base_url`` is the API root (e.g. ``https://api.openai.com/v1``; plain http only on a
    loopback host, e.g. ``http://127.0.0.1:8000/v1``). ``api_key_env`` names an environment
    variable ``VLMFORGE_JUDGE_*`` holding a key sent as ``Authorization: Bearer`` to the
    endpoint only; when it is unset (or not named) no key is sent. ``model_id`` names the judge
    in the cache key; by default the endpoint, the model name and the generation settings.
    ``batch_size`` requests run concurrently. ``timeout_s`` bounds one attempt, ``deadline_s``
    the whole judge run; see judge_http.py for retries and limits.
    """

    backend = "openai"

    def __init__(self, model: str, base_url: str, *, cache_dir: str | Path | None = None,
                 model_id: str | None = None, max_new_tokens: int = 48, batch_size: int = 8,
                 exact_match_shortcut: bool = True, api_key_env: str | None = None,
                 timeout_s: float = 60.0, deadline_s: float | None = 3600.0,
                 max_attempts: int = 4, backoff_s: float = 0.5,
                 max_response_bytes: int = 1 << 20):
        if not model:
            raise ValueError("judge model: an OpenAI-compatible judge needs a model name")
        self.base_url = check_base_url(base_url)
        self.api_key_env = check_key_env(api_key_env)
        self.policy = HttpPolicy(timeout_s=timeout_s, max_attempts=max_attempts,
                                 backoff_s=backoff_s, max_response_bytes=max_response_bytes)
        self.model = model
        self.endpoint = f"{self.base_url}/chat/completions"
        self.timeout_s = timeout_s
        self._settings(model_id or f"{self.base_url}|{model}|temperature=0|max_tokens={max_new_tokens}",
                       cache_dir, max_new_tokens, batch_size, exact_match_shortcut, deadline_s)

    def describe(self) -> dict:
        """The base description, the endpoint and model name (never the key)."""
        return {**super().describe(), "model": self.model, "base_url": self.base_url,
                "endpoint": self.endpoint, "temperature": 0, "api_key_env": self.api_key_env}

    def render(self, item: JudgeItem) -> str:
        """The user message sent (the endpoint applies the model's chat template)."""
        return lave_prompt(item)

    def request_body(self, prompt: str) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.max_new_tokens}

    def _secret_headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def complete(self, prompt: str) -> Completion:
        """One chat completion: the first choice's message content, stripped, and its tokens
        (the reply's ``usage``, else estimated)."""
        data = json.dumps(self.request_body(prompt)).encode()
        raw = post_json(self.endpoint, data,
                        {"Content-Type": "application/json", "Accept": "application/json"},
                        policy=self.policy, deadline=self._deadline,
                        secret_headers=self._secret_headers())
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge endpoint {self.endpoint}: reply is not a chat completion "
                             f"({raw[:200]!r})") from exc
        if content is not None and not isinstance(content, str):
            raise JudgeError(f"judge endpoint {self.endpoint}: message content is not text")
        content = (content or "").strip()
        usage = reply.get("usage") if isinstance(reply, dict) else None
        counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")] \
            if isinstance(usage, dict) else [None, None]
        if all(isinstance(n, int) and n >= 0 for n in counts):
            return Completion(content, counts[0], counts[1], "usage")
        return Completion(content, estimate_tokens(prompt), estimate_tokens(content) if content
                          else 0, "estimate")

    def generate(self, prompts: Sequence[str]) -> list[Completion]:
        """Completions of the prompts, up to ``batch_size`` requests at a time. When the
        deadline passes, ``JudgeDeadline.done`` holds the completions that did arrive."""
        if len(prompts) <= 1:
            return [self.complete(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(prompts))) as pool:
            futures = [pool.submit(self.complete, p) for p in prompts]
        done: list[Completion | None] = []
        late: JudgeDeadline | None = None
        for future in futures:
            try:
                done.append(future.result())
            except JudgeDeadline as exc:
                done.append(None)
                late = late or exc
        if late is not None:
            late.done = done
            raise late
        return done  # type: ignore[return-value]


JUDGE_BACKENDS = ("local", "openai")
HTTP_SETTINGS = ("timeout_s", "max_attempts", "backoff_s", "max_response_bytes")


def make_judge(backend: str, model: str, *, base_url: str | None = None,
               api_key_env: str | None = None, **kwargs) -> LocalJudge | OpenAIJudge:
    """A judge of the named backend: ``local`` (``model`` is a model directory) or ``openai``
    (``model`` is the endpoint's model name, ``base_url`` its API root). ``kwargs`` go to
    both (``cache_dir``, ``model_id``, ``max_new_tokens``, ``batch_size``,
    ``exact_match_shortcut``, ``deadline_s``); ``HTTP_SETTINGS`` to the openai one only."""
    if backend == "local":
        if base_url is not None or api_key_env is not None:
            raise ValueError("base_url and api_key_env apply to the openai judge backend only")
        return LocalJudge(model, **{k: v for k, v in kwargs.items() if k not in HTTP_SETTINGS})
    if backend == "openai":
        if base_url is None:
            raise ValueError("the openai judge backend needs a base_url")
        return OpenAIJudge(model, base_url, api_key_env=api_key_env, **kwargs)
    raise ValueError(f"unknown judge backend {backend!r}; expected one of {JUDGE_BACKENDS}")
