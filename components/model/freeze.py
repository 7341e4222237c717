"""Parameter groups of a VLM and the per-stage unfreezing schedule: frozen | lora | full.

Each architecture's spec names its groups (`Architecture.groups`: parameter-name prefixes
of the stock transformers class, `*` standing for any run of characters; a parameter belongs
to the first group that matches): vision, connector, text, and cross_attn for idefics.

`lora` injects peft LoRA adapters (in place, the model keeps its stock class) into every
Linear of the group except the LM head; `merge_lora` folds them back into the weights.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from torch import nn

from components.model.architectures import spec_of
from components.model.spec import UNFREEZE_MODES

Mode = Literal[UNFREEZE_MODES]  # type: ignore[valid-type]
MODES = UNFREEZE_MODES

def _is_lora(name: str) -> bool:
    return ".lora_" in name


def _group_of(name: str, prefixes: dict[str, tuple[str, ...]]) -> str | None:
    base = name.replace(".base_layer.", ".")
    return next((g for g, ps in prefixes.items() if any(fnmatchcase(base, p + "*") for p in ps)), None)


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Named parameters per group (LoRA adapter weights included in their group)."""
    prefixes = spec_of(model).groups
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in prefixes}
    stray = []
    for name, p in model.named_parameters():
        group = _group_of(name, prefixes)
        (groups[group].append((name, p)) if group else stray.append(name))
    if stray:
        raise ValueError(f"parameters outside every group: {stray[:5]}")
    return groups


def add_lora(model: nn.Module, groups: list[str], rank: int) -> list[str]:
    """Inject LoRA adapters (rank ``rank``, alpha 2*rank) into the groups' Linear layers."""
    from peft import LoraConfig, inject_adapter_in_model

    from components.model.common import seeded

    prefixes = spec_of(model).groups
    targets = [n for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not n.startswith("lm_head")
               and _group_of(n + ".", prefixes) in groups
               and ".lora_" not in n and not n.endswith(".base_layer")]
    if not targets:
        raise ValueError(f"groups {groups} have no Linear layer for LoRA")
    on_meta = next(model.parameters()).is_meta  # sizing a large model: adapters on meta too
    with seeded(0):  # the same adapters whatever ran before in this process
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                           target_modules=targets), model, low_cpu_mem_usage=on_meta)
    return targets


def has_lora(model: nn.Module) -> bool:
    return any(_is_lora(n) for n, _ in model.named_parameters())


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base weight and put the plain layer back, in place:
    the model saves and loads as a stock transformers class again."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):  # left by inject_adapter_in_model
        del model.peft_config
    return model


def apply_unfreezing(model: nn.Module, schedule: dict[str, Mode], lora_rank: int = 8) -> dict[str, int]:
    """Set trainability per group; return the trainable-parameter count per group.

    Every group must be named in the schedule, and the resulting trainable set is
    checked against it, so a recipe can never silently train the wrong parts:
    frozen -> nothing trains; full -> every base weight, no adapter; lora -> the adapters only.
    """
    prefixes = spec_of(model).groups
    if set(schedule) != set(prefixes):
        raise ValueError(f"schedule names {sorted(schedule)}, model has groups {sorted(prefixes)}")
    for name, mode in schedule.items():
        if mode not in MODES:
            raise ValueError(f"group {name!r}: unknown mode {mode!r}")
    if has_lora(model):
        merge_lora(model)  # a parent stage's adapters: fold them in before new ones
    lora_groups = [g for g, m in schedule.items() if m == "lora"]
    if lora_groups:
        add_lora(model, lora_groups, lora_rank)
    groups = parameter_groups(model)
    empty = [g for g, ps in groups.items() if not ps and schedule[g] != "frozen"]
    if empty:
        raise ValueError(f"group {empty[0]!r} has no parameters in this model: set it frozen")
    for group, params in groups.items():
        for name, p in params:
            p.requires_grad_(schedule[group] == "full" or (schedule[group] == "lora" and _is_lora(name)))
    counts = {g: sum(p.numel() for _, p in ps if p.requires_grad) for g, ps in groups.items()}
    for group, params in groups.items():
        trainable = {n for n, p in params if p.requires_grad}
        expected = {n for n, _ in params if {"frozen": False, "full": not _is_lora(n),
                                              "lora": _is_lora(n)}[schedule[group]]}
        if trainable != expected or (schedule[group] != "frozen" and not trainable):
            raise AssertionError(f"group {group!r} ({schedule[group]}): trainable set differs from "
                                 f"the schedule: {sorted(trainable ^ expected)[:5]}")
    return counts
