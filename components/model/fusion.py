"""SPHINX-style multi-encoder fusion: two vision towers, features concatenated per patch
before the connector, as an option of the LLaVA architecture.

No stock transformers class holds two vision towers, so the fusion is a small vision model
of this project, `FusedVisionModel` (a `PreTrainedModel` with its own config type), that
LLaVA uses as its `vision_tower` (LLaVA builds its tower with `AutoModel.from_config`). Its
output at each patch of the primary tower's grid is [primary | secondary] features; the
secondary tower's patch grid is resized bilinearly to the primary's (its CLS/register
tokens dropped), and it sees the image at its own resolution and normalisation: the pixels
arrive normalised for the primary tower (``primary_mean``/``primary_std``, 0.5 when unset)
and are renormalised with the secondary's stats when it has its own.

Limit: a saved fused model is *not* loadable by transformers alone: `import
components.model.fusion` first (it registers the config/model types with the Auto
classes), then `AutoModelForImageTextToText` / `AutoProcessor` load it as usual.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import BaseModelOutputWithPooling

from components.model.architectures.llava import assemble_llava
from components.model.backbones import IMAGE_MEAN, IMAGE_STD
from components.model.common import copy_exact


class FusedVisionConfig(PreTrainedConfig):
    model_type = "vlmforge_fused_vision"
    sub_configs_defaults = {
        "primary_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
        "secondary_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2"),
    }

    primary_config: dict | PreTrainedConfig | None = None
    secondary_config: dict | PreTrainedConfig | None = None
    # the stats the pixels arrive normalised with (the primary tower's; None: 0.5) and the
    # secondary's own (None: it takes the primary's pixels as they are)
    primary_mean: list[float] | None = None
    primary_std: list[float] | None = None
    secondary_mean: list[float] | None = None
    secondary_std: list[float] | None = None
    hidden_size: int = 0
    image_size: int = 0
    patch_size: int = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.hidden_size = self.primary_config.hidden_size + self.secondary_config.hidden_size
        self.image_size = self.primary_config.image_size
        self.patch_size = self.primary_config.patch_size


class FusedVisionModel(PreTrainedModel):
    """[primary | secondary] features on the primary tower's patch grid."""

    config_class = FusedVisionConfig
    config: FusedVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    base_model_prefix = "fused"

    def __init__(self, config: FusedVisionConfig):
        super().__init__(config)
        self.primary = AutoModel.from_config(config.primary_config)
        self.secondary = AutoModel.from_config(config.secondary_config)
        self.post_init()

    def _secondary_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.config.secondary_config.image_size
        if pixel_values.shape[-1] != size:
            pixel_values = nn.functional.interpolate(pixel_values, size=(size, size), mode="bilinear",
                                                     align_corners=False)
        if self.config.secondary_mean is not None:
            c = self.config
            p_mean = pixel_values.new_tensor(c.primary_mean or IMAGE_MEAN)[:, None, None]
            p_std = pixel_values.new_tensor(c.primary_std or IMAGE_STD)[:, None, None]
            mean = pixel_values.new_tensor(c.secondary_mean)[:, None, None]
            std = pixel_values.new_tensor(c.secondary_std)[:, None, None]
            pixel_values = ((pixel_values * p_std + p_mean) - mean) / std
        return pixel_values

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPooling:
        a = self.primary(pixel_values=pixel_values).last_hidden_state
        b = self.secondary(pixel_values=self._secondary_pixels(pixel_values)).last_hidden_state
        grid_a = self.config.image_size // self.config.patch_size
        sc = self.config.secondary_config
        grid_b = sc.image_size // sc.patch_size
        b = b[:, -grid_b * grid_b:]  # drop CLS / register tokens
        if grid_b != grid_a:
            b = b.transpose(1, 2).reshape(b.shape[0], -1, grid_b, grid_b)
            b = nn.functional.interpolate(b, size=(grid_a, grid_a), mode="bilinear", align_corners=False)
            b = b.flatten(2).transpose(1, 2)
        fused = torch.cat([a[:, -grid_a * grid_a:], b], dim=-1)
        return BaseModelOutputWithPooling(last_hidden_state=fused, pooler_output=fused.mean(1),
                                          hidden_states=(fused,))


AutoConfig.register(FusedVisionConfig.model_type, FusedVisionConfig, exist_ok=True)
AutoModel.register(FusedVisionConfig, FusedVisionModel, exist_ok=True)


def fuse_towers(primary: PreTrainedModel, secondary: PreTrainedModel,
                secondary_mean: list[float] | None = None,
                secondary_std: list[float] | None = None, *,
                primary_mean: list[float] | None = None,
                primary_std: list[float] | None = None) -> FusedVisionModel:
    """One vision model whose weights are exactly the two towers'."""
    config = FusedVisionConfig(primary_config=primary.config.to_dict(),
                               secondary_config=secondary.config.to_dict(),
                               primary_mean=primary_mean, primary_std=primary_std,
                               secondary_mean=secondary_mean, secondary_std=secondary_std)
    fused = FusedVisionModel(config)
    copy_exact(fused.primary, primary.state_dict(), "primary tower")
    copy_exact(fused.secondary, secondary.state_dict(), "secondary tower")
    return fused


def assemble_sphinx_llava(primary: PreTrainedModel, secondary: PreTrainedModel, lm: PreTrainedModel,
                          tokenizer: PreTrainedTokenizerBase, *, seed: int = 0,
                          secondary_mean: list[float] | None = None,
                          secondary_std: list[float] | None = None,
                          primary_mean: list[float] | None = None,
                          primary_std: list[float] | None = None):
    """LLaVA over the fused towers: the projector reads hidden_a + hidden_b channels per patch
    (pixels normalised with ``primary_mean``/``primary_std``, the LLaVA processor's stats)."""
    fused = fuse_towers(primary, secondary, secondary_mean, secondary_std,
                        primary_mean=primary_mean, primary_std=primary_std)
    return assemble_llava(fused, lm, tokenizer, seed=seed)


def fusion_cost(primary: PreTrainedModel, secondary: PreTrainedModel) -> dict[str, float]:
    """Measured extra cost of adding ``secondary`` to ``primary``: parameters, and forward
    FLOPs per image counted by torch's FlopCounterMode (works on the meta device too)."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(model: nn.Module, size: int) -> int:
        device = next(model.parameters()).device
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(pixel_values=torch.zeros(1, 3, size, size, device=device))
        return counter.get_total_flops()

    fa = flops(primary, primary.config.image_size)
    fb = flops(secondary, secondary.config.image_size)
    pa = sum(p.numel() for p in primary.parameters())
    pb = sum(p.numel() for p in secondary.parameters())
    return {"primary_params_m": pa / 1e6, "secondary_params_m": pb / 1e6,
            "extra_params_pct": 100 * pb / pa, "primary_gflops": fa / 1e9,
            "secondary_gflops": fb / 1e9, "extra_flops_pct": 100 * fb / fa}
