"""An image processor whose outputs are kept per image content, process-wide.

The same image goes through the processor many times: once per question when a stage splits
turns, again in every stage and in the evaluation of every stage's version (the tiny recipe's
demo spent about 35 s resizing and normalising images it had processed before). `ImageMemo`
wraps a processor's image processor: a call with images whose pixels, mode and size it has
seen, under the same processor settings and arguments, returns the kept output (a new dict of
the same arrays: the processor pops keys from it, nothing writes into the arrays). Anything
else is the wrapped processor's own. `VLMFORGE_IMAGE_MEMO_MB` (default 512; 0: off) bounds
what is kept; `clear` drops it (the pipeline does at its end).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from typing import Any

from components.budget import budget_bytes as env_budget

DEFAULT_MB = 512
ENV = "VLMFORGE_IMAGE_MEMO_MB"

_lock = threading.Lock()
_kept: dict[tuple, Any] = {}
_bytes = 0


def _flat(images) -> list:
    if isinstance(images, list | tuple):
        return [im for item in images for im in _flat(item)]
    return [images]


def _digest(image) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    if hasattr(image, "tobytes") and hasattr(image, "mode"):  # a PIL image
        h.update(f"{image.mode}{image.size}".encode())
    else:  # an array or tensor
        h.update(f"{type(image).__name__}{tuple(image.shape)}{image.dtype}".encode())
        image = image.numpy() if hasattr(image, "numpy") else image
    h.update(image.tobytes())
    return h.digest()


def _nbytes(output) -> int:
    values = output.values() if hasattr(output, "keys") else [output]  # a bare tensor (Idefics)
    return sum(getattr(v, "nbytes", 64) for v in values)


def _fresh(output):
    """A new dict of the kept arrays (the processor pops keys); a bare tensor as it is."""
    return type(output)(dict(output)) if hasattr(output, "keys") else output


class ImageMemo:
    """``inner`` (an image processor) with its outputs kept per image content."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, images, *args, **kwargs):
        global _bytes
        budget = env_budget(ENV, DEFAULT_MB)
        if not budget or args:
            return self.inner(images, *args, **kwargs)
        settings = repr(sorted(vars(self.inner).items()))  # read per call: settings may change
        key = (settings, repr(sorted(kwargs.items())), tuple(_digest(im) for im in _flat(images)))
        with _lock:
            kept = _kept.get(key)
        if kept is None:
            kept = self.inner(images, **kwargs)
            size = _nbytes(kept)
            with _lock:
                if key not in _kept and _bytes + size <= budget:
                    _kept[key] = kept
                    _bytes += size
        return _fresh(kept)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def with_image_memo(processor):
    """A shallow copy of ``processor`` whose image processor is an `ImageMemo` (``processor``
    itself unchanged: it is saved beside models); ``processor`` when it has none or is one."""
    inner = getattr(processor, "image_processor", None)
    if inner is None or isinstance(inner, ImageMemo):
        return processor
    memo = copy.copy(processor)
    memo.image_processor = ImageMemo(inner)
    return memo


def clear() -> None:
    """Drop every kept output."""
    global _bytes
    with _lock:
        _kept.clear()
        _bytes = 0
