"""Make any causal LM's tokenizer ready for an Idefics3-family VLM.

A hub LM's tokenizer has its own special-token names, often no pad token, may add a BOS
on every encode and brings a chat template of its own (e.g. ChatML ending turns with
`<|im_end|>`). The VLM's tokenizer must instead lay turns out the way `ChatEncoder` reads
them (assistant header `<|im_start|>assistant\\n`, turns ending with `<end_of_utterance>`,
`<image>` placeholders) and encode text without adding anything: the template already
placed the BOS, and the processors encode with ``add_special_tokens=True``.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.data.tokenizer import ASSISTANT_HEADER, CHAT_TEMPLATE, EOS

IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
CHAT_TOKENS = ["<|im_start|>"]  # the turn header CHAT_TEMPLATE and ChatEncoder use

_PROBE_ANSWER = "Blue."
_PROBE = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": _PROBE_ANSWER}]},
]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, lm: PreTrainedModel) -> PreTrainedTokenizerBase:
    """Add the image/chat special tokens a tokenizer lacks, give it a pad token, a chat
    template `ChatEncoder` can read and `<end_of_utterance>` as EOS (what generation stops
    at), stop it adding special tokens on encode, and grow the LM's embeddings to match
    (`resize_token_embeddings` keeps tied input/output embeddings tied)."""
    _add_special_tokens(tokenizer, IMAGE_TOKENS + CHAT_TOKENS)
    if tokenizer.pad_token is None:  # the LM's own EOS when it has one: never <end_of_utterance>
        if tokenizer.eos_token is not None and tokenizer.eos_token != EOS:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            _add_special_tokens(tokenizer, ["<pad>"])
            tokenizer.pad_token = "<pad>"
    tokenizer.eos_token = EOS
    _encode_without_special_tokens(tokenizer)
    if not template_fits(tokenizer):
        tokenizer.chat_template = CHAT_TEMPLATE
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))
    return tokenizer


def _is_one_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    """Whether ``token`` encodes to itself alone (a plain vocabulary entry like "<image>" in a
    BPE vocab would be split by the pre-tokenizer instead)."""
    ids = tokenizer(token, add_special_tokens=False).input_ids
    return len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token


def _add_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> None:
    missing = [t for t in tokens if not _is_one_token(tokenizer, t)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                     replace_extra_special_tokens=False)


def _encode_without_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Turn off the BOS/EOS a Llama-style tokenizer adds on encode: the chat template writes
    the BOS itself, so a processor encoding with special tokens would double it."""
    if _adds_special_tokens(tokenizer):
        tokenizer.add_bos_token = False  # the setters rebuild a fast tokenizer's post-processor
        tokenizer.add_eos_token = False
    if _adds_special_tokens(tokenizer):
        raise ValueError(f"{type(tokenizer).__name__} adds special tokens on encode and cannot be "
                         "told not to (add_bos_token / add_eos_token)")


def _adds_special_tokens(tokenizer: PreTrainedTokenizerBase) -> bool:
    text = "a b"
    return tokenizer(text).input_ids != tokenizer(text, add_special_tokens=False).input_ids


def template_fits(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template lays a conversation out as `ChatEncoder` masks it:
    an `<image>` per image, each answer right after `<|im_start|>assistant\\n` and ending with
    `<end_of_utterance>`, and a generation prompt ending with that header."""
    if not tokenizer.chat_template:
        return False
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False)
        prompt = tokenizer.apply_chat_template(_PROBE[:1], tokenize=False, add_generation_prompt=True)
    except Exception:  # a foreign template may raise anything (jinja2, its raise_exception)
        return False
    return ("<image>" in text and f"{ASSISTANT_HEADER}{_PROBE_ANSWER}{EOS}" in text
            and prompt.endswith(ASSISTANT_HEADER))
