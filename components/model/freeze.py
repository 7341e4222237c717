"""Parameter groups of a VLM and the per-stage unfreezing schedule."""

from __future__ import annotations

from typing import Literal

from torch import nn

Mode = Literal["frozen", "full"]


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Named groups of an Idefics3-family model: vision, connector, text."""
    inner = model.model
    groups = {
        "vision": list(inner.vision_model.parameters()),
        "connector": list(inner.connector.parameters()),
        "text": list(inner.text_model.parameters()) + list(model.lm_head.parameters()),
    }
    seen = {id(p) for ps in groups.values() for p in ps}
    stray = [n for n, p in model.named_parameters() if id(p) not in seen]
    if stray:
        raise ValueError(f"parameters outside every group: {stray[:5]}")
    return groups


def apply_unfreezing(model: nn.Module, schedule: dict[str, Mode]) -> dict[str, int]:
    """Set requires_grad per group; return the trainable-parameter count per group.

    Every group must be named in the schedule, and the resulting trainable set is
    checked against it, so a recipe can never silently train the wrong parts.
    """
    groups = parameter_groups(model)
    if set(schedule) != set(groups):
        raise ValueError(f"schedule names {sorted(schedule)}, model has groups {sorted(groups)}")
    for name, params in groups.items():
        if schedule[name] not in ("frozen", "full"):
            raise ValueError(f"group {name!r}: unknown mode {schedule[name]!r}")
        for p in params:
            p.requires_grad_(schedule[name] == "full")
    counts = {name: sum(p.numel() for p in ps if p.requires_grad) for name, ps in groups.items()}
    for name, mode in schedule.items():
        if (counts[name] > 0) != (mode == "full"):
            raise AssertionError(f"group {name!r} trainable={counts[name]} but schedule says {mode}")
    return counts
