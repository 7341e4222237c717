"""Few-shot evaluation prompts: k solved examples (image + question + answer turns) from a
support split before the query, drawn deterministically per query.

A shot is the first user turn of a support record (with its images) and the assistant
answer that follows it; shots come from the query's own task (captions for a caption query,
VQA for a VQA query) unless ``same_task`` is off. The draw depends only on ``seed`` and the
query's key, so a rerun, a reordered split or a second process builds the same prompt. The
query keeps only its user turns: its answer never enters the prompt.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence

from PIL import Image

from components.data.sample import Sample, image_placeholders

__all__ = ["FewShotPrompter", "draw_keys", "fewshot_prompts", "shot_turns"]

Prompt = tuple[list[dict], list[Image.Image]]


def shot_turns(sample: Sample) -> tuple[dict, dict]:
    """The first (user, assistant) turn pair of a support record, checked to carry all of the
    sample's images in the user turn."""
    messages = sample.record.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(f"support record {sample.key!r}: needs a user turn and its answer")
    user, answer = messages[0], messages[1]
    if user.get("role") != "user" or answer.get("role") != "assistant":
        raise ValueError(f"support record {sample.key!r}: must open with a user turn followed by "
                         f"an assistant turn, got {user.get('role')!r}, {answer.get('role')!r}")
    shown = image_placeholders([user])
    if shown != len(sample.images):
        raise ValueError(f"support record {sample.key!r}: its first turn shows {shown} images but "
                         f"the sample has {len(sample.images)}; a shot must carry all its images")
    return user, answer


def _draw(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"fewshot:{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_keys(keys: Sequence[str], k: int, query_key: str, *, seed: int = 0) -> list[str]:
    """The k of ``keys`` (sorted, unique) drawn for ``query_key``, never the query's own key:
    the draw :meth:`FewShotPrompter.shots` makes over samples with these keys, without copying
    the pool (official support sets are large)."""
    at = bisect.bisect_left(keys, query_key)
    own = at < len(keys) and keys[at] == query_key
    n = len(keys) - own
    if n < k:
        raise ValueError(f"query {query_key!r}: {k} shots asked but the support set has {n} items")
    # random.sample picks positions from the pool's length alone: the same draw as over a list
    picked = _draw(seed, query_key).sample(range(n), k)
    return [keys[i + (own and i >= at)] for i in picked]


class FewShotPrompter:
    """Builds k-shot prompts for queries from one support split."""

    def __init__(self, support: Sequence[Sample], k: int, *, seed: int = 0, same_task: bool = True):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k, self.seed, self.same_task = k, seed, same_task
        self.pools: dict[str | None, list[Sample]] = {}
        for s in sorted(support, key=lambda s: s.key):  # a drawn record is checked when used
            self.pools.setdefault(s.record.get("task") if same_task else None, []).append(s)

    def shots(self, query: Sample) -> list[Sample]:
        """The k support samples for ``query`` (never a sample with the query's key)."""
        if self.k == 0:
            return []
        task = query.record.get("task") if self.same_task else None
        pool = [s for s in self.pools.get(task, []) if s.key != query.key]
        if len(pool) < self.k:
            what = f"{task!r} samples" if self.same_task else "samples"
            raise ValueError(f"query {query.key!r}: {self.k} shots asked but the support split "
                             f"has {len(pool)} {what}")
        return _draw(self.seed, query.key).sample(pool, self.k)

    def prompt(self, query: Sample) -> Prompt:
        """Messages and images: the shots' turns, then the query's user turns."""
        messages: list[dict] = []
        images: list[Image.Image] = []
        for shot in self.shots(query):
            user, answer = shot_turns(shot)
            messages += [user, answer]
            images += shot.images
        asked = [m for m in query.record["messages"] if m["role"] != "assistant"]
        if not asked:
            raise ValueError(f"query {query.key!r}: has no user turn")
        if image_placeholders(asked) != len(query.images):
            raise ValueError(f"query {query.key!r}: its user turns show {image_placeholders(asked)} "
                             f"images but the sample has {len(query.images)}")
        return messages + asked, images + list(query.images)


def fewshot_prompts(queries: Sequence[Sample], support: Sequence[Sample], k: int, *,
                    seed: int = 0, same_task: bool = True) -> list[Prompt]:
    """(messages, images) per query for :func:`~components.evaluation.generate.generate_answers`."""
    prompter = FewShotPrompter(support, k, seed=seed, same_task=same_task)
    return [prompter.prompt(q) for q in queries]
