"""Activation (gradient) checkpointing of a stage's model: transformers' own, on every layer
of the vision tower and the LM, non-reentrant (so frozen inputs and LoRA need nothing more)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

KWARGS = {"use_reentrant": False}


@contextmanager
def activation_checkpointing(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """``model`` recomputing its layers' activations in backward for the block; off after."""
    if not enabled:
        yield
        return
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=KWARGS)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=KWARGS)
    try:
        yield
    finally:
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
        if hasattr(model, "disable_input_require_grads"):  # the enable call's embedding hooks
            model.disable_input_require_grads()
