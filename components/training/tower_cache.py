"""A frozen vision tower computes each distinct image once per process.

While the tower is frozen, its output for an image never changes, yet a pipeline shows it
the same image many times: every epoch, in split-turn batches once per question about it (a
scene asked five questions fills five rows with the same image), in every later stage that
keeps the same tower, and in the evaluation of each stage's version. `cached_tower` makes
the tower's forward look every image up by its content (a digest of its pixels and patch
mask) and run the tower on the misses only; the connector, which may train, still runs on
every row.

The outputs live in a store keyed by a digest of the tower's weights (and buffers), so every
model holding the same tower shares them: the next stage, align's frozen reference copy, the
evaluation of each registered version. Only the latest tower's store is kept
(`clear_shared` drops it: the pipeline does when it ends). The weights are read when the
cache starts serving and again after any call that stepped aside, so a tower that trained in
between gets a store of its own; changing a frozen tower's weights in place while it serves
is not seen.

The cache steps aside (the tower runs as usual) whenever caching could change a result:
a tower parameter that requires grad, or a dropout (or batch norm) that is active (the tower
in train mode). The store holds at most `max_bytes` of outputs: past that it stops adding, and
the images it holds keep being served. Outputs are ModelOutputs whose tensors (or tuples of
tensors) have one row per image; a tower returning anything else is called as usual.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from components.budget import budget_bytes as env_budget

DEFAULT_MB = 2048
ENV = "VLMFORGE_TOWER_CACHE_MB"  # the byte budget in MiB; 0 turns the cache off


@dataclass
class CacheStats:
    hits: int = 0  # images (tiles and views: what the tower sees) served from the cache
    misses: int = 0  # images the tower computed
    bytes: int = 0  # held now by the tower's store (shared with other models of the same tower)
    bypassed: int = 0  # tower calls passed straight through (trainable, dropout, or uncacheable output)

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics; none when no image went through the cache (the tower trained)."""
        seen = self.hits + self.misses
        if not seen:
            return {}
        return {"tower_cache_hits": float(self.hits), "tower_cache_misses": float(self.misses),
                "tower_cache_hit_rate": self.hits / seen,
                "tower_cache_mb": self.bytes / 2**20}


def budget_bytes() -> int:
    """The cache's byte budget: `VLMFORGE_TOWER_CACHE_MB` MiB (default 2048)."""
    return env_budget(ENV, DEFAULT_MB)


def _digests(tensors: list[torch.Tensor], extra: str) -> list[bytes]:
    """One key per row: the rows' bytes (with dtype and shape) of every tensor, and `extra`."""
    host = [t.detach().cpu().contiguous() for t in tensors]  # one copy off the device per tensor
    keys = []
    for i in range(host[0].shape[0]):
        h = hashlib.blake2b(extra.encode(), digest_size=16)
        for t in host:
            row = t[i]
            h.update(f"{row.dtype}{tuple(row.shape)}".encode())
            h.update(row.reshape(-1).view(torch.uint8).numpy().tobytes())
        keys.append(h.digest())
    return keys


def _rows(value, n: int):
    """`value` as `n` per-image pieces, or None when it has no row per image."""
    if value is None:
        return [None] * n
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
        return [value[i:i + 1].detach() for i in range(n)]
    if isinstance(value, tuple) and value:  # hidden states per layer (None: a layer not asked for)
        per = [_rows(v, n) for v in value]
        return None if any(p is None for p in per) else [tuple(p[i] for p in per) for i in range(n)]
    return None


def _stack(pieces: list):
    first = pieces[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(_stack([p[j] for p in pieces]) for j in range(len(first)))
    return torch.cat(pieces)


def _nbytes(piece) -> int:
    if piece is None:
        return 0
    if isinstance(piece, tuple):
        return sum(_nbytes(t) for t in piece)
    return piece.numel() * piece.element_size()


@dataclass
class _Store:
    max_bytes: int
    entries: dict[bytes, dict] = field(default_factory=dict)
    bytes: int = 0
    template: type | None = None  # the tower's output class


_SHARED: dict[bytes, _Store] = {}  # the latest tower's store, by weights digest


def clear_shared() -> None:
    """Drop the shared store (its memory, and every image it holds)."""
    _SHARED.clear()


def weights_digest(tower: nn.Module) -> bytes:
    """A digest of the tower's class, parameters and buffers (names, dtypes, shapes, devices, values)."""
    h = hashlib.blake2b(type(tower).__name__.encode(), digest_size=16)
    for name, t in itertools.chain(tower.named_parameters(), tower.named_buffers()):
        host = t.detach().cpu().contiguous()
        h.update(f"{name}{host.dtype}{tuple(host.shape)}{t.device}".encode())
        h.update(host.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def _shared_store(digest: bytes, max_bytes: int) -> _Store:
    store = _SHARED.get(digest)
    if store is None or store.max_bytes != max_bytes:
        _SHARED.clear()
        store = _SHARED[digest] = _Store(max_bytes)
    return store


class CachedForward:
    """A tower's forward that serves repeated images from a content-keyed cache."""

    def __init__(self, forward, tower: nn.Module, max_bytes: int):
        self.forward, self.tower, self.max_bytes = forward, tower, max_bytes
        self.stats = CacheStats()
        self.params: list[nn.Parameter] | None = None  # looked up on the first call: a copy's
        self.dropout = False  # tower is still being built when its forward is copied (dropout
        # or batch norm: a train-mode output differs from an eval-mode one)
        self.store: _Store | None = None  # the store of the tower's current weights
        self.cacheable = True

    def __deepcopy__(self, memo):
        # a copy of the model (a frozen reference, an FSDP shard) looks its store up by its
        # own weights: the same store while they are equal
        return CachedForward(copy.deepcopy(self.forward, memo), copy.deepcopy(self.tower, memo),
                             self.max_bytes)

    def _bypass(self) -> bool:
        if self.params is None:
            self.params = list(self.tower.parameters())
            self.dropout = (any((isinstance(m, nn.Dropout) and m.p > 0)
                                or isinstance(m, nn.modules.batchnorm._BatchNorm)
                                for m in self.tower.modules())
                            or bool(getattr(getattr(self.tower, "config", None), "attention_dropout", 0.0)))
        return (not self.cacheable or any(p.requires_grad for p in self.params)
                or (self.tower.training and self.dropout))

    def __call__(self, *args, **kwargs):
        if self._bypass():
            self.stats.bypassed += 1
            self.store = None  # the weights may change before the next cached call
            return self.forward(*args, **kwargs)
        if self.store is None:
            self.store = _shared_store(weights_digest(self.tower), self.max_bytes)
        store = self.store
        if args:
            kwargs["pixel_values"], args = args[0], args[1:]
        pixels = kwargs.pop("pixel_values")
        n = pixels.shape[0]
        per_image = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim()
                     and v.shape[0] == n}
        shared = {k: v for k, v in kwargs.items() if k not in per_image}
        if args or any(isinstance(v, torch.Tensor) for v in shared.values()):
            self.cacheable = False  # inputs without a row per image: no per-image key
            return self.forward(*args, pixel_values=pixels, **kwargs)
        extra = repr(sorted(shared.items()))
        keys = _digests([pixels, *per_image.values()], extra)
        first: dict[bytes, int] = {}  # each distinct image's first row
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [i for key, i in first.items() if key not in store.entries]
        fresh = self._compute(missing, keys, pixels, per_image, shared) if missing else {}
        if fresh is None:  # an output without a row per image: the whole batch, as usual
            return self.forward(pixel_values=pixels, **per_image, **shared)
        self.stats.hits += n - len(missing)
        self.stats.misses += len(missing)
        for key, piece in fresh.items():
            size = sum(_nbytes(p) for p in piece.values())
            if store.bytes + size <= store.max_bytes:
                store.entries[key] = piece
                store.bytes += size
        self.stats.bytes = store.bytes
        pieces = [fresh.get(key) or store.entries[key] for key in keys]
        return store.template(**{k: _stack([p[k] for p in pieces]) for k in pieces[0]})

    def _compute(self, rows: list[int], keys: list[bytes], pixels: torch.Tensor, per_image: dict,
                 shared: dict) -> dict[bytes, dict] | None:
        """The tower's output pieces of images `rows`, by key (None: not cacheable)."""
        index = torch.tensor(rows, device=pixels.device)
        out = self.forward(pixel_values=pixels.index_select(0, index),
                           **{k: v.index_select(0, index) for k, v in per_image.items()}, **shared)
        fields = {k: _rows(v, len(rows)) for k, v in out.items()} if hasattr(out, "items") else None
        if fields is None or any(pieces is None for pieces in fields.values()):
            self.cacheable = False
            return None
        self.store.template = type(out)
        return {keys[i]: {k: pieces[j] for k, pieces in fields.items()} for j, i in enumerate(rows)}


def vision_tower(model: nn.Module) -> nn.Module:
    """The model's vision tower: the module its architecture's `vision` group names."""
    from components.model.architectures import spec_of

    prefix = spec_of(model).groups["vision"][0].rstrip(".")
    return model.get_submodule(prefix)


@contextmanager
def cached_tower(model: nn.Module, max_bytes: int | None = None) -> Iterator[CacheStats | None]:
    """``model``'s vision tower serving repeated images from a cache for the block (yields its
    stats), or unchanged (yields None) when the budget is 0."""
    max_bytes = budget_bytes() if max_bytes is None else max_bytes
    if max_bytes <= 0:
        yield None
        return
    tower = vision_tower(model)
    outer = vars(tower).get("forward")  # a cache around this block's (nested blocks)
    patched = CachedForward(tower.forward, tower, max_bytes)
    tower.forward = patched
    try:
        yield patched.stats
    finally:
        if outer is None:
            del tower.forward
        else:
            tower.forward = outer
