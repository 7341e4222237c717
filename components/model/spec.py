"""The recipe's ``model:`` section: which architecture joins which backbones, and its options.

Backbones are named by hub id, local directory, ``registered:<name>`` (a backbone the
recipe's backbones stage trains and registers) or ``inline`` (a vision tower built from
``vision_inline``). Options an architecture does not read must stay at their defaults, so
a recipe never sets a knob that silently does nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.model.architectures import ARCHITECTURES, spec

REGISTERED = "registered:"
UNFREEZE_MODES = ("frozen", "lora", "full")  # per parameter group, per stage (freeze.py)


class ModelSpec(BaseModel):
    """Architecture, backbones and architecture options of a recipe's VLM."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal[ARCHITECTURES] = "idefics3"  # type: ignore[valid-type]
    # hub id / directory / registered:<name>, or "inline": a tower built from `vision_inline`
    vision: str = "registered:vision-tiny"
    # with vision: inline, a tower config (SigLIP; CLIP with model_type: clip_vision_model)
    vision_inline: dict[str, Any] | None = None
    text: str = "registered:lm-tiny"
    scale_factor: int = Field(2, gt=0)  # idefics3: pixel-shuffle factor
    # idefics3: "pool" starts the projection as a mean over the merged patches (pool_init)
    connector_init: Literal["random", "pool"] = "random"
    resampler_latents: int = Field(16, gt=0)  # idefics2 / idefics: perceiver latents per image
    # idefics: false lets the cross-attention read the tower's patch features directly
    use_resampler: bool = True
    resampler_depth: int = Field(2, gt=0)
    resampler_heads: int = Field(4, gt=0)
    resampler_head_dim: int | None = Field(None, gt=0)  # None: the width / resampler_heads
    cross_layer_interval: int = Field(1, gt=0)  # idefics: a gated cross-attention layer every N
    # idefics: the gates' start, tanh(0) = closed (Flamingo: the VLM starts as the LM) or
    # tanh(1) = open (the new layers get full gradient from the first step)
    cross_attn_gate: Literal["zeros", "ones"] = "zeros"
    # idefics: RMS-normalise each head's queries and keys in the cross-attention (Idefics'
    # qk_layer_norms), so no image token wins by its key's length alone
    cross_attn_qk_norm: bool = False
    # llava only: a second vision tower fused per patch (SPHINX), e.g. facebook/dinov2-small
    fusion_vision: str | None = None
    max_length: int = Field(256, gt=0)
    # idefics3 / idefics2 / llava: training images whose tower outputs standardise the image
    # features (0: off)
    standardize_features: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _inline_vision(self) -> ModelSpec:
        if (self.vision == "inline") != (self.vision_inline is not None):
            raise ValueError("model.vision: inline goes with model.vision_inline (a tower config)")
        return self

    @model_validator(mode="after")
    def _options_of_the_architecture(self) -> ModelSpec:
        read = set(spec(self.architecture).options)
        stray = [name for name in ARCHITECTURE_OPTIONS if name not in read
                 and getattr(self, name) != type(self).model_fields[name].default]
        if stray:
            raise ValueError(f"model.{stray[0]} does not apply to architecture "
                             f"{self.architecture!r} (its options: {sorted(read) or 'none'})")
        return self

    def backbone_names(self) -> list[str]:
        """The registered backbones this model is assembled from."""
        specs = (self.vision, self.text, self.fusion_vision)
        return [s.removeprefix(REGISTERED) for s in specs if s and s.startswith(REGISTERED)]


# options that belong to one architecture or another (`Architecture.options`)
ARCHITECTURE_OPTIONS = ("scale_factor", "connector_init", "resampler_latents", "use_resampler",
                        "resampler_depth", "resampler_heads", "resampler_head_dim",
                        "cross_layer_interval", "cross_attn_gate", "cross_attn_qk_norm", "fusion_vision",
                        "standardize_features")
