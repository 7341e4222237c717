"""LLaVA: vision tower -> 2-layer MLP projector -> causal LM, one token per patch.

The vision tower is stored whole (SigLIP or CLIP vision model, any `AutoModel`), so its
weights copy in under their own names; the LM is the Llama decoder plus its LM head.
The result is a stock `LlavaForConditionalGeneration`. Resolution is the tower's native
size: LLaVA has no image splitting, so a stage's `longest_edge` must equal it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from components.model.architectures import Architecture, Features
from components.model.backbones import IMAGE_MEAN, IMAGE_STD
from components.model.common import (
    check_vocab,
    copy_exact,
    scale_to_embeddings,
    seeded,
    set_generation_ids,
)


def _has_cls_token(vision_config) -> bool:
    return vision_config.model_type.startswith("clip")


def llava_config(vision_config, text_config, *, image_token_id: int) -> LlavaConfig:
    """Last-layer features of every patch (CLIP: the CLS token dropped)."""
    cls = _has_cls_token(vision_config)
    return LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default" if cls else "full",
        projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def assemble_llava(vision: PreTrainedModel, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   *, seed: int = 0, **_: object) -> LlavaForConditionalGeneration:
    """LLaVA with both backbones copied in exactly; only the projector is new (from ``seed``)."""
    check_vocab(lm, tokenizer)
    config = llava_config(vision.config, lm.config,
                          image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    config.text_config.pad_token_id = tokenizer.pad_token_id
    with seeded(seed):
        model = LlavaForConditionalGeneration(config)
    copy_exact(model.model.vision_tower, vision.state_dict(), "vision")
    copy_exact(model.model.language_model, lm.model.state_dict(), "language model")
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    generator = torch.Generator().manual_seed(seed)
    proj = model.model.multi_modal_projector
    torch.nn.init.normal_(proj.linear_1.weight, std=1.0 / proj.linear_1.in_features**0.5,
                          generator=generator)
    torch.nn.init.zeros_(proj.linear_1.bias)
    scale_to_embeddings(proj.linear_2, lm, generator)
    set_generation_ids(model, tokenizer)
    return model


def patch_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower features the projector reads: the configured encoder layer's output, one row
    per patch (CLIP's CLS token dropped), shape (N, patches, hidden)."""
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
    features = hidden[model.config.vision_feature_layer]
    return features[:, 1:] if model.config.vision_feature_select_strategy == "default" else features


@torch.no_grad()
def standardize_projector_input(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> None:
    """Fold per-channel standardisation of the tower's features into the projector's first
    linear layer (LLaVA reads an encoder layer's output, before any final LayerNorm).

    Statistics come from ``pixel_values`` (N, 3, size, size), a sample of training images;
    afterwards the projector sees every feature channel with mean 0 and variance 1, as its
    initialisation assumes. The model stays a stock LLaVA (only linear_1 changes)."""
    features = patch_features(model, pixel_values)
    flat = features.reshape(-1, features.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    linear = model.model.multi_modal_projector.linear_1
    linear.bias.sub_(linear.weight @ (mean / std))
    linear.weight.div_(std)


def llava_processor(model, tokenizer: PreTrainedTokenizerBase, longest_edge: int, *,
                    image_mean: Sequence[float] = IMAGE_MEAN,
                    image_std: Sequence[float] = IMAGE_STD) -> LlavaProcessor:
    """Images resized (squashed) to the tower's native size and normalised with its own
    mean/std; one `<image>` per patch."""
    vc = model.config.vision_config
    if longest_edge != vc.image_size:
        raise ValueError(f"LLaVA runs at the tower's native {vc.image_size} px; a stage asked for "
                         f"{longest_edge} px (no image splitting in this architecture)")
    image_processor = SiglipImageProcessorPil(
        size={"height": vc.image_size, "width": vc.image_size}, resample=3,
        image_mean=list(image_mean), image_std=list(image_std))
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vc.patch_size,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
        num_additional_image_tokens=1 if _has_cls_token(vc) else 0,
        chat_template=tokenizer.chat_template)


def _assemble(vision, lm, tokenizer, model_spec, seed: int) -> LlavaForConditionalGeneration:
    return assemble_llava(vision, lm, tokenizer, seed=seed)


SPEC = Architecture(
    name="llava", model_type="llava", family="self-attention",
    assemble=_assemble, processor=llava_processor,
    groups={"vision": ("model.vision_tower.",), "connector": ("model.multi_modal_projector.",),
            "text": ("model.language_model.", "lm_head.")},
    card=lambda m: "MLP projector" + (f", fused with {m.fusion_vision}" if m.fusion_vision else ""),
    supports=Features(packing=False, splitting=False),
    options=("fusion_vision", "standardize_features"),
    standardize=standardize_projector_input,
)
