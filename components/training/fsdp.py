"""FSDP in the training loop (accelerate's FullyShardedDataParallelPlugin, torch's FSDP2).

accelerate turns FSDP on only on an accelerator device: under `accelerate launch` with an
FSDP config on CPU it sets up MULTI_CPU (gloo) and drops the plugin. `enable_on_cpu` turns
it back on; FSDP2's collectives (all-gather, reduce-scatter) run on gloo.

FSDP shards a module in place (its classes, hooks and parameters change), yet after training
rank 0 evaluates and saves the model alone. So the loop shards `shard_copy(model)`, a second
module tree over new parameter objects that share `model`'s storage; `release` frees
`model`'s parameters once the copy is sharded, and `gather_into` puts the full (unsharded)
weights back into `model` on every rank.
"""

from __future__ import annotations

import copy

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, parse_flag_from_env
from torch import nn


def enable_on_cpu(accel: Accelerator) -> None:
    """Use the FSDP that the launcher asked for (`ACCELERATE_USE_FSDP`) on CPU processes too."""
    if accel.distributed_type == DistributedType.MULTI_CPU and parse_flag_from_env("ACCELERATE_USE_FSDP"):
        accel.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the launcher's env
        # both shared states, as accelerate does: a later AcceleratorState() copies PartialState's
        accel.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP


def is_fsdp(accel: Accelerator) -> bool:
    return accel.distributed_type == DistributedType.FSDP


def shard_copy(model: nn.Module) -> nn.Module:
    """`model`'s module tree over new parameters sharing its storage (ties kept), buffers copied."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def release(model: nn.Module) -> None:
    """Free `model`'s parameter storage (the sharded copy trains; `gather_into` refills it)."""
    for p in model.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)


def gather_into(sharded: nn.Module, model: nn.Module, device: torch.device) -> nn.Module:
    """Every rank (a collective): the full weights of `sharded` into `model`'s parameters, on
    `device` in their own dtype; returns `model`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    for name, p in model.named_parameters():
        p.data = full[name].detach().to(device=device, dtype=p.dtype)
    return model
