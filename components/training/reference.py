"""The reference of an align stage without a second model in memory (the stage's `reference`).

- ``adapters``: the policy itself with its LoRA adapters switched off. A stage's adapters
  start at zero (the parent's were merged in), so the adapter-free policy is the parent.
- ``cached``: the parent's log-probs of every row the stage will train on, computed before
  the first step (the batch stream is seeded, so a fresh one replays the same batches) and
  attached to each batch under `REFERENCE_LOGPS`. Rows are keyed by their content (a hash of
  the row's tensors), so a file written by one run serves any later run with the same
  reference model and data, whatever its beta or loss; the caller names the file after both.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from components.model.logps import model_sequence_logps
from components.training.objectives import REFERENCE_LOGPS


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """``model`` with every LoRA adapter off (trainability and mode restored after)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError("reference: adapters needs a policy with LoRA adapters; it has none")
    trainable = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    training = model.training
    model.eval()
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in trainable.items():
            p.requires_grad_(flag)
        model.train(training)


def adapter_reference(policy: nn.Module, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The reference log-probs of the rows: the policy's own, adapters off (a `ReferenceFn`)."""
    with adapters_disabled(policy):
        return model_sequence_logps(policy, inputs, labels)


def row_digests(batch: dict) -> list[str]:
    """A content key per row: the row's slice of every per-row tensor, and the whole of any
    other tensor (images laid out across rows)."""
    rows = batch["input_ids"].shape[0]
    digests = []
    for row in range(rows):
        h = hashlib.sha256()
        for key in sorted(k for k in batch if k != REFERENCE_LOGPS):
            t = batch[key]
            part = t[row] if t.dim() and t.shape[0] == rows else t
            h.update(f"{key}:{part.dtype}:{tuple(part.shape)};".encode())
            h.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests.append(h.hexdigest())
    return digests


class ReferenceCache:
    """Reference log-probs per row content, read from and written to a JSON file (or kept in
    memory without one)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.logps: dict[str, float] = {}
        if path is not None and path.exists():
            self.logps = json.loads(path.read_text())

    @torch.no_grad()
    def fill(self, model: nn.Module, batches: Iterable[dict]) -> int:
        """Compute (in eval mode) the rows of ``batches`` not cached yet, save; the rows computed."""
        device = next(model.parameters()).device
        training = model.training
        model.eval()
        computed = 0
        try:
            for batch in batches:
                keys = row_digests(batch)
                if all(k in self.logps for k in keys):
                    continue
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                values = model_sequence_logps(model, inputs, batch["labels"].to(device))
                self.logps.update(zip(keys, values.tolist(), strict=True))
                computed += len(keys)
        finally:
            model.train(training)
        if computed and self.path is not None:
            self.save()
        return computed

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.logps))
        tmp.replace(self.path)

    def attach(self, batch: dict) -> dict:
        """``batch`` with its rows' reference log-probs under `REFERENCE_LOGPS`."""
        keys = row_digests(batch)
        missing = sum(k not in self.logps for k in keys)
        if missing:
            raise KeyError(f"{missing} of {len(keys)} rows of a batch have no cached reference "
                           "log-probs: the batch stream differs from the one the cache was filled from")
        return {**batch, REFERENCE_LOGPS: torch.tensor([self.logps[k] for k in keys])}


class WithReference:
    """The training batches with cached reference log-probs: batch i gets them when
    ``i % world == rank`` (the batches this process trains on, as the loop shards them)."""

    def __init__(self, batches: Iterable[dict], cache: ReferenceCache, rank: int = 0, world: int = 1):
        self.batches, self.cache, self.rank, self.world = batches, cache, rank, world

    def __iter__(self) -> Iterator[dict]:
        for i, batch in enumerate(self.batches):
            yield self.cache.attach(batch) if i % self.world == self.rank else batch


def own_batches(batches: Iterable[dict], count: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
    """The batches among the first ``count`` of ``batches`` that process ``rank`` trains on."""
    for i, batch in enumerate(itertools.islice(batches, count)):
        if i % world == rank:
            yield batch
