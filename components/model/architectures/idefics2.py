"""Idefics2: vision tower -> MLP -> perceiver resampler (a fixed number of latents per
image) -> causal LM.

The SigLIP tower's weights copy into `Idefics2VisionTransformer` under the same names
(its pooling head is dropped). The tile is the tower's native size; a stage above it
splits the image into 4 crops plus the whole image, as the Idefics2 processor does.
Each view costs `resampler_n_latents` tokens whatever its resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import (
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2Processor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

from components.model.architectures import Architecture, Features
from components.model.architectures.idefics3 import VISION_KEYS, standardize_image_features
from components.model.backbones import IMAGE_MEAN, IMAGE_STD
from components.model.common import (
    check_vocab,
    copy_exact,
    seeded,
    set_generation_ids,
    vision_tower_state,
)


def idefics2_config(vision_config, text_config, *, image_token_id: int, n_latents: int,
                    depth: int, n_heads: int, head_dim: int) -> Idefics2Config:
    perceiver = dict(hidden_size=text_config.hidden_size, rms_norm_eps=text_config.rms_norm_eps,
                     resampler_n_latents=n_latents, resampler_depth=depth,
                     resampler_n_heads=n_heads, resampler_head_dim=head_dim,
                     num_key_value_heads=min(n_heads, getattr(text_config, "num_key_value_heads",
                                                              n_heads)))
    return Idefics2Config(
        vision_config={k: getattr(vision_config, k) for k in VISION_KEYS},
        perceiver_config=perceiver,
        text_config=text_config.to_dict(),
        image_token_id=image_token_id,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def assemble_idefics2(vision: PreTrainedModel, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      *, seed: int = 0, n_latents: int = 16, resampler_depth: int = 2,
                      resampler_heads: int = 4, resampler_head_dim: int | None = None,
                      **_: object) -> Idefics2ForConditionalGeneration:
    """Idefics2 with both backbones copied in exactly; MLP + perceiver are new (from ``seed``)."""
    check_vocab(lm, tokenizer)
    head_dim = resampler_head_dim or lm.config.hidden_size // resampler_heads
    config = idefics2_config(vision.config, lm.config,
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             n_latents=n_latents, depth=resampler_depth, n_heads=resampler_heads,
                             head_dim=head_dim)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    with seeded(seed):
        model = Idefics2ForConditionalGeneration(config)
    copy_exact(model.model.vision_model, vision_tower_state(vision), "vision")
    copy_exact(model.model.text_model, lm.model.state_dict(), "language model")
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    set_generation_ids(model, tokenizer)
    return model


def idefics2_processor(model, tokenizer: PreTrainedTokenizerBase, longest_edge: int, *,
                       image_mean: Sequence[float] = IMAGE_MEAN,
                       image_std: Sequence[float] = IMAGE_STD) -> Idefics2Processor:
    """Views at the tower's native size (above it, 4 crops + the whole image), normalised
    with the tower's own mean/std."""
    tile = model.config.vision_config.image_size
    if longest_edge not in (tile, 2 * tile):
        raise ValueError(f"Idefics2 splits into 2x2 crops: longest_edge must be {tile} or {2 * tile}")
    image_processor = Idefics2ImageProcessorPil(
        do_resize=True, size={"shortest_edge": tile, "longest_edge": tile},
        do_image_splitting=longest_edge > tile, resample=3,
        image_mean=list(image_mean), image_std=list(image_std))
    return Idefics2Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        image_seq_len=model.config.perceiver_config.resampler_n_latents,
        chat_template=tokenizer.chat_template)


def _assemble(vision, lm, tokenizer, model_spec, seed: int) -> Idefics2ForConditionalGeneration:
    m = model_spec
    return assemble_idefics2(vision, lm, tokenizer, seed=seed, n_latents=m.resampler_latents,
                             resampler_depth=m.resampler_depth, resampler_heads=m.resampler_heads,
                             resampler_head_dim=m.resampler_head_dim)


SPEC = Architecture(
    name="idefics2", model_type="idefics2", family="self-attention",
    assemble=_assemble, processor=idefics2_processor,
    groups={"vision": ("model.vision_model.",), "connector": ("model.connector.",),
            "text": ("model.text_model.", "lm_head.")},
    card=lambda m: f"perceiver resampler ({m.resampler_latents} latents)",
    supports=Features(packing=True, splitting=True),
    options=("resampler_latents", "resampler_depth", "resampler_heads", "resampler_head_dim",
             "standardize_features"),
    standardize=standardize_image_features,
)
