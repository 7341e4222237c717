"""`vlmforge bench generation`: batched KV-cache greedy generation vs one prompt at a time,
same tiny randomly initialised Idefics3, same prompts, same `max_new_tokens`
(ratio = per-sample seconds / batched seconds)."""

from __future__ import annotations

import time

TOKENIZER_TEXTS = ["user\nWhat colour is the circle?", "assistant\nred", "Is there a blue square?",
                   "assistant\nyes", "Describe the image.", "a red circle at the top left."] * 40
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2)
QUESTIONS = ["What colour is the circle?", "Is there a blue square?", "Describe the image.",
             "How many shapes are there in the picture, counting the small ones?"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "purple", "orange"]


def _tiny_model_and_encoder(seed: int):
    import torch

    from components.data.tokenizer import train_tokenizer
    from components.model.architectures.idefics3 import assemble_idefics3, build_processor
    from components.model.backbones import load_text_backbone, load_vision_backbone
    from components.model.chat import ChatEncoder

    tokenizer = train_tokenizer(TOKENIZER_TEXTS, 400)
    torch.manual_seed(seed)
    vision, lm = load_vision_backbone(VISION), load_text_backbone(TEXT, vocab_size=len(tokenizer))
    model = assemble_idefics3(vision, lm, tokenizer, scale_factor=2).eval()
    processor = build_processor(tokenizer, tile_size=32, longest_edge=32, patch_size=8, scale_factor=2)
    return model, ChatEncoder(processor, max_length=512)


def _prompts(n: int) -> list:
    from PIL import Image

    from components.data.sample import user_turn

    return [([user_turn(QUESTIONS[i % len(QUESTIONS)], n_images=1)],
             [Image.new("RGB", (48, 48), COLOURS[i % len(COLOURS)])]) for i in range(n)]


def bench_generation(n_prompts: int = 64, max_new_tokens: int = 16, batch_size: int = 32,
                     seed: int = 0) -> dict:
    """Seconds for `generate_answers` batched and with batch_size=1, after one warm-up each."""
    import torch

    from components.evaluation.generate import generate_answers

    model, encoder = _tiny_model_and_encoder(seed)
    prompts = _prompts(n_prompts)
    # end-of-utterance is never sampled: every prompt gets exactly max_new_tokens in both modes
    model.generation_config.suppress_tokens = [encoder.tokenizer.eos_token_id]

    def timed(bs: int) -> tuple[float, list[str]]:
        generate_answers(model, encoder, prompts[:bs], max_new_tokens=max_new_tokens, batch_size=bs)
        start = time.perf_counter()
        answers = generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=bs)
        return time.perf_counter() - start, answers

    batched_s, batched = timed(batch_size)
    single_s, single = timed(1)
    return {"batched_seconds": round(batched_s, 3), "per_sample_seconds": round(single_s, 3),
            "ratio": round(single_s / batched_s, 2), "prompts": n_prompts,
            "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "torch_threads": torch.get_num_threads(),
            "same_answers": sum(a == b for a, b in zip(batched, single, strict=True)) / n_prompts}
