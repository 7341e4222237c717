"""Grounded connector fit: each image token starts on the LM's embedding of what it shows.

A tiny LM learns late, in a sudden transition, to look up "the circle" among image
tokens that a randomly initialised connector produces. When the image token of a region
is the sum of the LM's own input embeddings of the phrase naming it ("red circle"), the
lookup is the one the LM already does on words, and it learns it in a few hundred steps
(measured in the README's "Known limits"). This module fits the connector's last linear
layer to those targets in closed form (ridge regression over the frozen tower's features:
Idefics3's pixel-shuffle projection, or LLaVA's second MLP layer over the first layer's
fixed random features) on records that say where their objects are.

Idefics (Flamingo) without the perceiver resampler has no connector: its gated
cross-attention layers read the tower's patch features. There the fitted map becomes every
cross-attention layer's key and value projection, and the query and output projections start
as the identity: each text position looks up the image tokens that hold its own words'
embeddings ("circle") and adds what they show ("red circle") to its residual stream.

On tiny-flamingo that start bound neither colour nor existence. With ``targets="words"``
each image token's target is instead its phrase's bag of words, one coordinate per word: the
fitted map is folded under every cross-attention layer's own random key and value projections
(queries and outputs keep their random start), so the layers see clean symbolic image tokens
through fixed random projections, as long as the projections stay frozen (they are the
connector group of Idefics without a resampler). On one-hot colour and shape tokens the
frozen-LM cross-attention learnt colour, shape and existence; on the patch features, raw or
standardised, or with the fitted projections left to train, it did not (README,
"Architectures, LoRA and the larger recipes").

Region annotations: a record's ``objects`` with a ``quadrant`` (the shape scenes). An image
token's target is the phrase embedding of the region that contains the centre of the area
the token covers; tokens on background (and a CLS token) get the zero vector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the image
WORD_SCALE = 3.0  # a word's coordinate in a "words" target
NOWHERE: Box = (-1.0, -1.0, -1.0, -1.0)  # a token that covers no place (CLS): target zero
QUADRANT_BOXES: dict[str, Box] = {
    "top left": (0.0, 0.0, 0.5, 0.5),
    "top right": (0.5, 0.0, 1.0, 0.5),
    "bottom left": (0.0, 0.5, 0.5, 1.0),
    "bottom right": (0.5, 0.5, 1.0, 1.0),
}


def regions(record: dict[str, Any], name_position: bool = False) -> list[tuple[Box, str]]:
    """The record's annotated regions as (box, phrase: "red circle", with ``name_position``
    "red circle top left"); [] when it has none."""
    return [(QUADRANT_BOXES[o["quadrant"]],
             f"{o['colour']} {o['shape']}" + (f" {o['quadrant']}" if name_position else ""))
            for o in record.get("objects", ()) if o.get("quadrant") in QUADRANT_BOXES]


def token_boxes(rows: int, cols: int, per_side: int) -> list[Box]:
    """The area each image token covers, in the Idefics3 order: the rows x cols tiles (each
    `per_side` x `per_side` tokens, row-major), then the global view; rows = cols = 0 when the
    image is not split (the global view only)."""
    def grid(x0: float, y0: float, w: float, h: float) -> list[Box]:
        s = 1.0 / per_side
        return [(x0 + c * s * w, y0 + r * s * h, x0 + (c + 1) * s * w, y0 + (r + 1) * s * h)
                for r in range(per_side) for c in range(per_side)]
    boxes = [b for r in range(rows) for c in range(cols) for b in grid(c / cols, r / rows, 1 / cols, 1 / rows)]
    return boxes + grid(0.0, 0.0, 1.0, 1.0)


def phrase_embedding(tokenizer, embeddings: torch.Tensor, phrase: str) -> torch.Tensor:
    """Sum of the input embeddings of ``phrase`` as it is tokenised inside a sentence."""
    ids = tokenizer.encode(" " + phrase, add_special_tokens=False)
    return embeddings[ids].sum(0)


def word_table(tokenizer, phrases: Iterable[str]) -> torch.Tensor:
    """A table over the token ids with one column per distinct token of ``phrases`` (WORD_SCALE
    on its own row): used as the "embeddings" of `phrase_embedding`, a phrase's bag of words."""
    ids = sorted({i for p in phrases for i in tokenizer.encode(" " + p, add_special_tokens=False)})
    table = torch.zeros(len(tokenizer), len(ids))
    table[ids, torch.arange(len(ids))] = WORD_SCALE
    return table


def token_targets(annotated: list[tuple[Box, str]], boxes: list[Box], tokenizer,
                  embeddings: torch.Tensor) -> torch.Tensor:
    """One target per token box: the phrase embedding of the region holding its centre, else 0."""
    vectors = [(box, phrase_embedding(tokenizer, embeddings, phrase)) for box, phrase in annotated]
    out = torch.zeros(len(boxes), embeddings.shape[1])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for (rx0, ry0, rx1, ry1), vector in vectors:
            if rx0 <= cx < rx1 and ry0 <= cy < ry1:
                out[i] = vector
                break
    return out


@dataclass
class GroundingFit:
    images: int  # annotated images the fit used
    tokens: int  # image tokens (rows of the regression)
    r2: float  # share of the targets' (weighted) variance the fitted connector explains there
    heldout_r2: float | None = None  # the same on annotated images the fit never saw


def _is_llava(model) -> bool:
    return hasattr(model.model, "multi_modal_projector")


def _cross_attentions(model) -> list | None:
    """Idefics' gated cross-attention modules, or None for a model without them."""
    layers = getattr(model.model, "gated_cross_attn_layers", None)
    return None if layers is None else [layer.cross_attn for layer in layers]


def projection_of(model) -> torch.nn.Linear:
    """The linear layer the fit sets: the projection after pixel shuffle of an Idefics3-style
    connector, the second layer of LLaVA's MLP projector (over the first layer's random
    features: the standardised tower features through linear_1 and its activation), or the
    first cross-attention layer's value projection of Idefics without a resampler."""
    if _is_llava(model):
        return model.model.multi_modal_projector.linear_2
    if (attentions := _cross_attentions(model)) is not None:
        if model.config.use_resampler:
            raise ValueError("ground_connector on idefics needs model.use_resampler: false (the "
                             "cross-attention must read the tower's patch features to be fitted)")
        return attentions[0].v_proj
    proj = getattr(getattr(getattr(model.model, "connector", None), "modality_projection", None), "proj", None)
    if not isinstance(proj, torch.nn.Linear):
        raise ValueError(f"ground_connector needs an Idefics3-style connector (pixel shuffle, then one "
                         f"linear projection) or a LLaVA projector; {type(model).__name__} has neither")
    return proj


@dataclass
class _Moments:
    """Sufficient statistics of the regression from pixel-shuffled features x to targets y."""

    xtx: torch.Tensor
    xty: torch.Tensor
    yty: float = 0.0
    ysum: torch.Tensor | None = None
    tokens: int = 0
    images: int = 0
    total_weight: float = 0.0  # of the tokens (the global view's count more, see flush)

    def r2(self, projection: torch.Tensor) -> float:
        """Explained share of the targets' variance for x @ projection (weighted tokens)."""
        p = projection
        residual = self.yty - 2 * float((p * self.xty).sum()) + float((p * (self.xtx @ p)).sum())
        return 1.0 - residual / (self.yty - float((self.ysum * self.ysum).sum()) / self.total_weight)


Tokens = list[tuple[torch.Tensor, list[Box], torch.Tensor]]  # per image: features, boxes, weights


def _idefics3_tokens(model, image_processor, images: list[Image.Image]) -> Tokens:
    """Pixel-shuffled tower features of every tile and the global view. The global view weighs
    as much as all tiles together: stages at a lower resolution see only the global view, and
    the fit serves them as well as the tiled ones."""
    connector, proj = model.model.connector, projection_of(model)
    vision = model.config.vision_config
    per_side = (vision.image_size // vision.patch_size) // model.config.scale_factor
    enc = image_processor([[img] for img in images], return_row_col_info=True, return_tensors="pt")
    hidden = model.model.vision_model(pixel_values=enc["pixel_values"].flatten(0, 1)).last_hidden_state
    shuffled = connector.pixel_shuffle(hidden, connector.scale_factor)
    shuffled = shuffled.reshape(len(images), -1, proj.in_features)  # padding frames come last
    out = []
    for x, rows, cols in zip(shuffled, enc["rows"], enc["cols"], strict=True):
        boxes = token_boxes(rows[0], cols[0], per_side)
        w = torch.ones(len(boxes), 1, dtype=torch.float64)
        w[-per_side * per_side:] = max(1, rows[0] * cols[0])
        out.append((x[:len(boxes)], boxes, w))
    return out


def _llava_tokens(model, image_processor, images: list[Image.Image]) -> Tokens:
    """LLaVA's one token per patch of the single view, as linear_2 reads it."""
    from components.model.architectures.llava import patch_features

    vision, projector = model.config.vision_config, model.model.multi_modal_projector
    pixels = image_processor(images, return_tensors="pt")["pixel_values"]
    x = projector.act(projector.linear_1(patch_features(model, pixels)))
    boxes = token_boxes(0, 0, vision.image_size // vision.patch_size)
    return [(row, boxes, torch.ones(len(boxes), 1, dtype=torch.float64)) for row in x]


def _idefics_tokens(model, image_processor, images: list[Image.Image]) -> Tokens:
    """The tower's CLS and patch features, as Idefics' cross-attention reads them."""
    vision = model.config.vision_config
    x = model.model.vision_model(pixel_values=image_processor(images, return_tensors="pt")).last_hidden_state
    boxes = [NOWHERE] + token_boxes(0, 0, vision.image_size // vision.patch_size)
    return [(row, boxes, torch.ones(len(boxes), 1, dtype=torch.float64)) for row in x]


def _tokens_of(model):
    if _is_llava(model):
        return _llava_tokens
    return _idefics3_tokens if _cross_attentions(model) is None else _idefics_tokens


@torch.no_grad()
def _fold_words(model, weight: torch.Tensor) -> None:
    """Fold the fitted map to word coordinates (features x words) under every cross-attention
    layer's random key and value projections: each reads the word coordinates through the
    first columns of its own initial weight."""
    words = weight.shape[1]
    for attention in _cross_attentions(model):
        for linear in (attention.k_proj, attention.v_proj):
            if words > linear.in_features:
                raise ValueError(f"ground_connector targets: words found {words} words, more than "
                                 f"the {linear.in_features} feature channels")
            linear.weight.copy_(linear.weight[:, :words] @ weight.T.to(linear.weight.dtype))


@torch.no_grad()
def _set_projection(model, weight: torch.Tensor) -> None:
    """Write the fitted map (features x targets) into the layer(s) it initialises."""
    attentions = _cross_attentions(model)
    for linear in ([projection_of(model)] if attentions is None
                   else [p for a in attentions for p in (a.k_proj, a.v_proj)]):
        linear.weight.copy_(weight.T.to(linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.zero_()
    for attention in attentions or ():
        for linear in (attention.q_proj, attention.o_proj):
            linear.weight.copy_(torch.eye(*linear.weight.shape, dtype=linear.weight.dtype))


@torch.no_grad()
def _moments(model, image_processor, tokenizer, records: Iterable[tuple[Image.Image, dict]],
             name_position: bool, embeddings: torch.Tensor, chunk: int = 64) -> _Moments:
    proj = projection_of(model)
    tokens_of = _tokens_of(model)
    width = embeddings.shape[1]
    m = _Moments(torch.zeros(proj.in_features, proj.in_features, dtype=torch.float64),
                 torch.zeros(proj.in_features, width, dtype=torch.float64),
                 ysum=torch.zeros(width, dtype=torch.float64))
    batch: list[tuple[Image.Image, list]] = []

    def flush() -> None:  # one product per chunk: per image, the d x d sums cost more than the tower
        tokens = tokens_of(model, image_processor, [img for img, _ in batch])
        x = torch.cat([x for x, _, _ in tokens]).double()
        w = torch.cat([w for _, _, w in tokens])
        y = torch.cat([token_targets(annotated, boxes, tokenizer, embeddings)
                       for (_, annotated), (_, boxes, _) in zip(batch, tokens, strict=True)]).double()
        m.xtx.add_(x.T @ (w * x))
        m.xty.add_(x.T @ (w * y))
        m.yty += float((w * y * y).sum())
        m.ysum.add_((w * y).sum(0))
        m.tokens += len(x)
        m.total_weight += float(w.sum())
        m.images += len(tokens)
        batch.clear()

    was_training = model.training
    model.eval()
    for image, record in records:
        if annotated := regions(record, name_position):
            batch.append((image, annotated))
            if len(batch) == chunk:
                flush()
    if batch:
        flush()
    model.train(was_training)
    return m


def fit_connector(model, image_processor, tokenizer, records: Iterable[tuple[Image.Image, dict]],
                  ridge: float, heldout: Iterable[tuple[Image.Image, dict]] = (),
                  name_position: bool = False,
                  targets: Literal["phrases", "words"] = "phrases") -> GroundingFit:
    """Set the connector's projection to the ridge solution mapping the frozen tower's
    pixel-shuffled features onto the token targets of the annotated ``records`` (image,
    record); the tower and the LM are unchanged. ``heldout`` records only measure the fit;
    ``name_position`` adds each region's quadrant to its phrase; ``targets="words"`` fits
    bags of words instead of phrase embeddings (Idefics without a resampler only)."""
    proj = projection_of(model)
    if targets == "phrases":
        embeddings = model.get_input_embeddings().weight.detach().float()
    elif _cross_attentions(model) is None:
        raise ValueError("ground_connector targets: words needs idefics without a resampler (the "
                         "words are folded under its cross-attention's keys and values)")
    else:  # the word columns come from the records, which the fit then reads again
        records = list(records)
        embeddings = word_table(tokenizer, (p for _, r in records for _, p in regions(r, name_position)))
    fit = _moments(model, image_processor, tokenizer, records, name_position, embeddings)
    if not fit.images:
        raise ValueError("ground_connector found no annotated images (records with objects and "
                         "quadrants) in the stage's sources")
    weight = torch.linalg.solve(fit.xtx + ridge * torch.eye(proj.in_features, dtype=torch.float64), fit.xty)
    (_set_projection if targets == "phrases" else _fold_words)(model, weight)
    check = _moments(model, image_processor, tokenizer, heldout, name_position, embeddings)
    return GroundingFit(fit.images, fit.tokens, fit.r2(weight), check.r2(weight) if check.images else None)
