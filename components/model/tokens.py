"""Make any causal LM's tokenizer ready for an Idefics3-family VLM."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.data.tokenizer import CHAT_TEMPLATE

IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, lm: PreTrainedModel) -> PreTrainedTokenizerBase:
    """Add the image/chat special tokens a tokenizer lacks, give it a chat template that
    places `<image>` placeholders, and grow the LM's embeddings to match."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in IMAGE_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                     replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template or "<image>" not in tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
        if "<|im_start|>" not in vocab:
            tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]},
                                         replace_extra_special_tokens=False)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))
    return tokenizer
