"""The Idefics3 processor for one training stage: resolution and image splitting.

The tile size is the vision tower's native resolution and never changes; a stage
raises resolution by splitting the image into more tiles plus a downscaled global
view, as Idefics3 / SmolVLM do. So no position embedding is ever interpolated.
"""

from __future__ import annotations

from transformers import Idefics3Processor, PreTrainedTokenizerBase
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil


def image_seq_len(tile_size: int, patch_size: int, scale_factor: int) -> int:
    """Image tokens per tile after pixel shuffle."""
    return (tile_size // patch_size) ** 2 // scale_factor**2


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    *,
    tile_size: int,
    longest_edge: int,
    patch_size: int,
    scale_factor: int,
) -> Idefics3Processor:
    """Processor whose images are resized to `longest_edge` and split into `tile_size` tiles."""
    if longest_edge % tile_size:
        raise ValueError(f"longest_edge {longest_edge} must be a multiple of tile_size {tile_size}")
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": tile_size},
        do_image_splitting=longest_edge > tile_size,
        resample=3,  # bicubic: close to Lanczos, a third of its cost
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(tile_size, patch_size, scale_factor),
        chat_template=tokenizer.chat_template,
    )
