"""Turn chat samples into model batches: image tokens, assistant-only labels, padding.

Image tokens are never truncated: a sample longer than `max_length` is dropped and
counted by the caller (see `encode_chat` returning None). Image tokens are never labels
either, in any layout: an assistant turn may hold images (an interleaved document is one
assistant message of texts and images), and the placeholders the processor expands them
into are inputs, not text to predict.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from components.model.image_memo import with_image_memo

IGNORE = -100
# the tokens processors expand an image into (Idefics3 tiles, Idefics2, LLaVA, Idefics)
IMAGE_PLACEHOLDERS = ("<image>", "<fake_token_around_image>", "<global-img>",
                      *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
_PROCESSOR_TOKENS = ("image_token", "fake_image_token", "global_image_tag", "global_image_token")


def find_subsequence(seq: list[int], sub: list[int], start: int = 0) -> int:
    """Index of the first occurrence of `sub` in `seq` at or after `start`, or -1."""
    n = len(sub)
    for i in range(start, len(seq) - n + 1):
        if seq[i : i + n] == sub:
            return i
    return -1


def assistant_mask(input_ids: list[int], header_ids: list[int], end_id: int) -> list[bool]:
    """True on every assistant token: after each assistant header, up to and including its end token."""
    mask = [False] * len(input_ids)
    pos = find_subsequence(input_ids, header_ids)
    while pos >= 0:
        i = pos + len(header_ids)
        while i < len(input_ids):
            mask[i] = True
            if input_ids[i] == end_id:
                break
            i += 1
        pos = find_subsequence(input_ids, header_ids, i)
    return mask


def placeholder_ids(processor, tokenizer) -> frozenset[int]:
    """Ids of the image placeholder tokens in ``tokenizer``: the known names plus the
    processor's own (looked up in the vocabulary, so an absent name never maps to unk)."""
    names = set(IMAGE_PLACEHOLDERS)
    for attr in _PROCESSOR_TOKENS:
        value = getattr(processor, attr, None)
        value = getattr(value, "content", value)  # an AddedToken
        if isinstance(value, str):
            names.add(value)
    vocab = tokenizer.get_vocab()
    return frozenset(vocab[n] for n in names if n in vocab)


def image_positions(input_ids: list[int], image_ids: frozenset[int],
                    blank: Callable[[int], bool]) -> list[bool]:
    """True on every image placeholder token and on the blank tokens between two of them
    (the line breaks Idefics3 puts between tile rows), i.e. on the whole expansion."""
    out = [t in image_ids for t in input_ids]
    hits = [i for i, is_image in enumerate(out) if is_image]
    for a, b in itertools.pairwise(hits):
        if b > a + 1 and all(blank(t) for t in input_ids[a + 1 : b]):
            out[a + 1 : b] = [True] * (b - a - 1)
    return out


@dataclass
class Encoded:
    """One tokenised sample: ids, labels and its images' pixel tensors."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None  # (n_images, 3, H, W)
    pixel_attention_mask: torch.Tensor | None
    # how `collate` lays images out for the model (see `image_layout`)
    layout: str = "tiles"
    image_token_id: int | None = None  # layout "cross": the token each image is announced by


def image_layout(processor) -> str:
    """How `collate` lays images out for this processor's model.

    "tiles": (batch, images, 3, H, W) + pixel_attention_mask (Idefics2/3);
    "flat": (images, 3, H, W) (LLaVA); "cross": (batch, images, 3, H, W) +
    image_attention_mask, each token seeing the latest image before it (Idefics/Flamingo)."""
    name = type(processor).__name__
    return {"LlavaProcessor": "flat", "IdeficsProcessor": "cross"}.get(name, "tiles")


class ChatEncoder:
    """Encodes chat-format samples with a processor; the loss covers assistant turns only."""

    def __init__(self, processor, max_length: int, assistant_header: str = "<|im_start|>assistant\n"):
        self.processor = processor
        self._processing = with_image_memo(processor)  # each image processed once (image_memo.py)
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.header_ids = self.tokenizer(assistant_header, add_special_tokens=False).input_ids
        self.end_id = self.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
        self.layout = image_layout(processor)
        # IdeficsProcessor drops its chat template on reload; the tokenizer keeps the same one
        self._templater = processor if getattr(processor, "chat_template", None) else self.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<image>")
        self.placeholder_ids = placeholder_ids(processor, self.tokenizer)
        self._blank: dict[int, bool] = {}

    def _is_blank(self, token_id: int) -> bool:
        if token_id not in self._blank:
            self._blank[token_id] = not self.tokenizer.decode([token_id]).strip()
        return self._blank[token_id]

    def labels(self, ids: list[int]) -> list[int]:
        """Assistant tokens, less the image placeholders (and row breaks) inside them."""
        mask = assistant_mask(ids, self.header_ids, self.end_id)
        image = image_positions(ids, self.placeholder_ids, self._is_blank)
        return [t if m and not im else IGNORE for t, m, im in zip(ids, mask, image, strict=True)]

    def tokenize(self, text: str, images: list[Image.Image]) -> tuple[list[int], torch.Tensor | None, torch.Tensor | None]:
        if self.layout == "cross":  # the template already placed one <image> per image
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            if not images:  # an all-zero image nothing attends to: Idefics always wants pixels
                size = self.processor.image_processor.image_size
                return ids, torch.zeros((1, 3, size, size)), None
            pixels = self._processing.image_processor(images, return_tensors="pt")  # a bare tensor
            return ids, getattr(pixels, "pixel_values", pixels), None
        if images:
            enc = self._processing(text=[text], images=[images], return_tensors="pt")
            if self.layout == "flat":
                return enc.input_ids[0].tolist(), enc.pixel_values, None
            return enc.input_ids[0].tolist(), enc.pixel_values[0], enc.pixel_attention_mask[0]
        return self.tokenizer(text, add_special_tokens=False).input_ids, None, None

    def _encoded(self, ids: list[int], labels: list[int], pixels, pmask) -> Encoded:
        return Encoded(ids, labels, pixels, pmask, self.layout, self.image_token_id)

    def encode(self, messages: list[dict], images: list[Image.Image]) -> Encoded | None:
        """Whole conversation; labels on assistant tokens. None when over max_length."""
        text = self._templater.apply_chat_template(messages, tokenize=False)
        ids, pixels, pmask = self.tokenize(text, images)
        if len(ids) > self.max_length:
            return None
        return self._encoded(ids, self.labels(ids), pixels, pmask)

    def encode_with_answer(self, messages: list[dict], images: list[Image.Image], answer: str) -> Encoded | None:
        """Prompt `messages` plus one assistant `answer` (for preference pairs)."""
        full = messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        return self.encode(full, images)

    def prompt(self, messages: list[dict], images: list[Image.Image]) -> Encoded:
        """Generation prompt (no labels), for evaluation."""
        text = self._templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids, pixels, pmask = self.tokenize(text, images)
        return self._encoded(ids, [IGNORE] * len(ids), pixels, pmask)


def collate(items: list[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ids/labels to the longest sample and images to the most images per sample.

    Padding images are all-zero, which Idefics3 drops before the vision tower, so
    text-only samples in a mixed batch cost no vision compute.
    """
    longest = max(len(it.input_ids) for it in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(items), longest), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it.input_ids)
        sl = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
        ids[row, sl] = torch.tensor(it.input_ids)
        labels[row, sl] = torch.tensor(it.labels)
        attn[row, sl] = 1
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    with_images = [it for it in items if it.pixel_values is not None]
    if items[0].layout == "flat":
        if with_images:
            batch["pixel_values"] = torch.cat([it.pixel_values for it in with_images])
        return batch
    if items[0].layout == "cross":
        return _cross_attention_images(batch, items, with_images)
    if with_images:
        n_img = max(it.pixel_values.shape[0] for it in with_images)
        _, c, h, w = with_images[0].pixel_values.shape
        pixels = torch.zeros((len(items), n_img, c, h, w))
        pmask = torch.zeros((len(items), n_img, h, w), dtype=torch.bool)
        for row, it in enumerate(items):
            if it.pixel_values is not None:
                k = it.pixel_values.shape[0]
                pixels[row, :k] = it.pixel_values
                pmask[row, :k] = it.pixel_attention_mask.bool()
        batch["pixel_values"] = pixels
        batch["pixel_attention_mask"] = pmask
    return batch


def _cross_attention_images(batch: dict, items: list[Encoded], with_images: list[Encoded]) -> dict:
    """Idefics/Flamingo inputs: every row gets image slots (a text-only sample brings one
    all-zero image that no token attends to, as the Idefics processor does) and each token
    attends to the latest image announced before it."""
    ids = batch["input_ids"]
    n_img = max(it.pixel_values.shape[0] for it in with_images)
    _, c, h, w = with_images[0].pixel_values.shape
    pixels = torch.zeros((len(items), n_img, c, h, w))
    mask = torch.zeros((*ids.shape, n_img), dtype=torch.bool)
    for row, it in enumerate(items):
        if it.pixel_values is None:
            continue
        pixels[row, : it.pixel_values.shape[0]] = it.pixel_values
        is_image = (ids[row] == it.image_token_id) & batch["attention_mask"][row].bool()
        latest = is_image.long().cumsum(0) - 1  # -1 before the first image
        seen = (latest >= 0) & batch["attention_mask"][row].bool()
        mask[row, seen, latest[seen]] = True
    batch["pixel_values"] = pixels
    batch["image_attention_mask"] = mask
    return batch
