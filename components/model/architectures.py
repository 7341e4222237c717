"""One entry point for every architecture: assemble a VLM from backbones, build its processor.

| name | family | class | connector |
|---|---|---|---|
| idefics3 | self-attention | Idefics3ForConditionalGeneration | pixel shuffle + linear |
| llava | self-attention | LlavaForConditionalGeneration | 2-layer MLP |
| idefics2 | self-attention | Idefics2ForConditionalGeneration | MLP + perceiver resampler |
| idefics | cross-attention | IdeficsForVisionText2Text | perceiver + gated cross-attention |

Every result is a stock transformers class: `AutoModelForImageTextToText` and
`AutoProcessor` load it with nothing from this project.
"""

from __future__ import annotations

from typing import Any, Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.model.assembly import assemble_idefics3
from components.model.idefics import assemble_idefics, idefics_processor
from components.model.idefics2 import assemble_idefics2, idefics2_processor
from components.model.llava import assemble_llava, llava_processor
from components.model.processor import build_processor

Architecture = Literal["idefics3", "llava", "idefics2", "idefics"]
FAMILY = {"idefics3": "self-attention", "llava": "self-attention", "idefics2": "self-attention",
          "idefics": "cross-attention"}
MODEL_TYPE = {"idefics3": "idefics3", "llava": "llava", "idefics2": "idefics2", "idefics": "idefics"}


def assemble(architecture: Architecture, vision: PreTrainedModel, lm: PreTrainedModel,
             tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **options: Any) -> PreTrainedModel:
    """The VLM of ``architecture`` with both backbones' weights copied in exactly.

    options: idefics3 `scale_factor`, `connector_init`; idefics2/idefics `n_latents`, `resampler_depth`,
    `resampler_heads`; idefics `cross_layer_interval` (others are ignored).
    """
    if architecture == "idefics3":
        return assemble_idefics3(vision, lm, tokenizer, scale_factor=options.get("scale_factor", 2),
                                 seed=seed, connector_init=options.get("connector_init", "random"))
    builders = {"llava": assemble_llava, "idefics2": assemble_idefics2, "idefics": assemble_idefics}
    if architecture not in builders:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(FAMILY)}")
    return builders[architecture](vision, lm, tokenizer, seed=seed, **options)


def architecture_of(model: PreTrainedModel) -> Architecture:
    by_type = {v: k for k, v in MODEL_TYPE.items()}
    if model.config.model_type not in by_type:
        raise ValueError(f"not a VLM this project builds: {model.config.model_type!r}")
    return by_type[model.config.model_type]


def processor_for(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, longest_edge: int):
    """The processor for one stage at ``longest_edge`` px, matching the model's architecture."""
    arch = architecture_of(model)
    if arch == "idefics3":
        vc = model.config.vision_config
        return build_processor(tokenizer, tile_size=vc.image_size, longest_edge=longest_edge,
                               patch_size=vc.patch_size, scale_factor=model.config.scale_factor)
    return {"llava": llava_processor, "idefics2": idefics2_processor,
            "idefics": idefics_processor}[arch](model, tokenizer, longest_edge)
