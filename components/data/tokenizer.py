"""A byte-level BPE tokenizer trained on the corpus, with the special tokens and chat template."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from components.data.sample import message_text
from components.data.shards import read_records, split_shards

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|begin_of_text|>", "<end_of_utterance>"
EXTRA_SPECIAL_TOKENS: list[str] = [
    "<|im_start|>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]
SPECIAL_TOKENS: list[str] = [PAD, UNK, BOS, EOS, *EXTRA_SPECIAL_TOKENS]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ASSISTANT_HEADER = "<|im_start|>assistant\n"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None, *,
    split_digits: bool = False,
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts``; wrap for transformers; save to ``out_dir`` if given.

    Special tokens take ids 0.. in ``SPECIAL_TOKENS`` order; encoding adds no bos/eos.
    ``split_digits``: no merge spans two digits, so a number is read out one digit at a time.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size {vocab_size} too small: need >= {256 + len(SPECIAL_TOKENS)} "
            "(256 byte symbols + special tokens)"
        )
    backend = Tokenizer(models.BPE(unk_token=UNK))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits else byte_level)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=EXTRA_SPECIAL_TOKENS,
        add_bos_token=False,
        add_eos_token=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def corpus_texts(shard_dir: str | Path, split: str = "train") -> Iterator[str]:
    """Texts of a split's shards: each message as "role\ntext" (as the chat template lays it
    out), every chosen/rejected answer and reference answer."""
    for _, record in read_records(split_shards(shard_dir, split)):
        for message in record["messages"]:
            yield f"{message['role']}\n{message_text(message)}"
        for key in ("chosen", "rejected"):
            if key in record:
                yield record[key]
        yield from record.get("answers", [])
