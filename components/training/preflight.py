"""Pre-flight checks of a stage's data pipeline, run on a fixed sample before the first step.

Packing and truncation bugs change scores without a crash, so each stage proves on its own
first samples (the rows it is about to train on, encoded as its batches encode them):

- **image tokens = image features**: the image placeholder tokens of each row equal the
  features the model's vision side produces for that row's pixels (one marker per image for
  the cross-attention layout, whose features enter through cross-attention);
- **labels by role**: every label sits on an assistant token; the share of labels by role
  (system / user / assistant / image / other) is reported, and a label on a system, user,
  image or other token fails the stage;
- **packing keeps samples apart** (packed stages): the per-sample loss of a packed batch
  equals each sample's loss alone.

A failed check raises `PreflightError` naming the check and the sample's key.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from components.data.sample import Sample
from components.model.chat import IGNORE, ChatEncoder, Encoded, collate, find_subsequence
from components.training.packing import collate_packed, first_fit, packed_model_inputs

ROLES = ("system", "user", "assistant")
PREFLIGHT_SAMPLES = 16  # the fixed sample: a stage's first samples
LOSS_TOLERANCE = 1e-4


class PreflightError(ValueError):
    """A pre-flight check failed on one sample."""

    def __init__(self, check: str, key: str, detail: str):
        super().__init__(f"pre-flight check {check!r} failed on sample {key!r}: {detail}")
        self.check, self.key = check, key


@dataclass
class PreflightReport:
    samples: int = 0
    rows: int = 0
    label_share: dict[str, float] = field(default_factory=dict)  # role -> share of labels
    checks: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"preflight_samples": float(self.samples), "preflight_rows": float(self.rows),
                **{f"preflight_label_share_{role}": v for role, v in self.label_share.items()}}


def token_roles(item: Encoded, encoder: ChatEncoder) -> list[str]:
    """The role of every token: the turn it sits in (from the `<|im_start|>role` headers up
    to and including the turn's end token), ``image`` for image placeholders, else ``other``."""
    ids = item.input_ids
    roles = ["other"] * len(ids)
    for role in ROLES:
        header = encoder.tokenizer(f"<|im_start|>{role}\n", add_special_tokens=False).input_ids
        at = find_subsequence(ids, header)
        while at >= 0:
            i = at + len(header)
            while i < len(ids):
                roles[i] = role
                if ids[i] == encoder.end_id:
                    break
                i += 1
            at = find_subsequence(ids, header, i)
    for i, token in enumerate(ids):
        if token in encoder.placeholder_ids:
            roles[i] = "image"
    return roles


def image_feature_count(model, item: Encoded) -> int:
    """How many image tokens the model's vision side produces for one row's pixels."""
    if item.pixel_values is None:
        return 0
    if item.layout == "cross":  # Flamingo: one marker per image, features by cross-attention
        # a text-only row carries one all-zero stand-in image that no token attends to
        # (ChatEncoder.tokenize)
        if item.pixel_values.shape[0] == 1 and not item.pixel_values.any():
            return 0
        return int(item.pixel_values.shape[0])
    inner = model.model
    with torch.no_grad():
        if item.layout == "flat":
            out = inner.get_image_features(
                pixel_values=item.pixel_values,
                vision_feature_layer=model.config.vision_feature_layer,
                vision_feature_select_strategy=model.config.vision_feature_select_strategy)
        else:
            out = inner.get_image_features(pixel_values=item.pixel_values[None],
                                           pixel_attention_mask=item.pixel_attention_mask[None])
    return sum(int(f.reshape(-1, f.shape[-1]).shape[0]) for f in out.pooler_output)


def check_image_tokens(model, encoder: ChatEncoder, rows: list[tuple[str, Encoded]]) -> None:
    for key, item in rows:
        tokens = item.input_ids.count(encoder.image_token_id)
        features = image_feature_count(model, item)
        if tokens != features:
            raise PreflightError("image tokens = image features", key,
                                 f"{tokens} image tokens in the sequence, the vision side "
                                 f"produces {features} features for its images")


def label_share(encoder: ChatEncoder, rows: list[tuple[str, Encoded]]) -> dict[str, float]:
    """Share of labels by role; a label off the assistant turns fails."""
    counts: Counter[str] = Counter()
    for key, item in rows:
        roles = token_roles(item, encoder)
        labelled = [roles[i] for i, label in enumerate(item.labels) if label != IGNORE]
        wrong = Counter(r for r in labelled if r != "assistant")
        if wrong:
            raise PreflightError("labels on assistant tokens only", key,
                                 f"labels on {dict(wrong)} token(s)")
        counts.update(labelled)
    total = sum(counts.values()) or 1
    return {role: counts[role] / total for role in (*ROLES, "image", "other")}


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor) -> list[float]:
    """Mean next-token loss of each segment (sample) of each row, in row order."""
    logits, labels, segments = logits[:, :-1].float(), labels[:, 1:], segments[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                            reduction="none")
    out = []
    for row in range(labels.shape[0]):
        for seg in segments[row].unique().tolist():
            mask = (segments[row] == seg) & (labels[row] != IGNORE)
            if mask.any():
                out.append(float(nll[row][mask].mean()))
    return out


def check_packing(model, encoder: ChatEncoder, rows: list[tuple[str, Encoded]],
                  packed_inputs: Callable[[torch.nn.Module, dict], dict] = packed_model_inputs) -> None:
    """The per-sample loss of the packed rows equals each sample's loss alone."""
    items = [(k, it) for k, it in rows if any(label != IGNORE for label in it.labels)]
    groups = first_fit([len(it.input_ids) for _, it in items], encoder.max_length)
    packed_rows = [[items[i] for i in group] for group in groups]
    batch = collate_packed([[it for _, it in row] for row in packed_rows], encoder.tokenizer.pad_token_id)
    segments = (batch["position_ids"] == 0).long().cumsum(-1)
    model.eval()
    with torch.no_grad():
        packed = per_sample_losses(model(**packed_inputs(model, batch)).logits, batch["labels"], segments)
        for (key, item), loss in zip(itertools.chain.from_iterable(packed_rows), packed, strict=True):
            alone = collate([item], encoder.tokenizer.pad_token_id)
            logits = model(**{k: v for k, v in alone.items() if k != "labels"}).logits
            expected = per_sample_losses(logits, alone["labels"], torch.ones_like(alone["labels"]))[0]
            if abs(loss - expected) > LOSS_TOLERANCE * max(1.0, abs(expected)):
                raise PreflightError("packed loss = unpacked loss", key,
                                     f"packed {loss:.6f} vs alone {expected:.6f}: attention "
                                     "crosses samples or positions do not restart")


def run_preflight(model, encoder: ChatEncoder, samples: Iterable[Sample],
                  encode: Callable[[Sample], list[Encoded] | None], *, packing: bool,
                  limit: int = PREFLIGHT_SAMPLES) -> PreflightReport:
    """All checks on the first ``limit`` samples, each encoded with ``encode`` (the stage's
    batches' own encoding: split turns, selected question types, preference pairs)."""
    rows: list[tuple[str, Encoded]] = []
    taken = 0
    for sample in itertools.islice(samples, limit):
        taken += 1
        rows += [(sample.key, item) for item in encode(sample) or []]
    report = PreflightReport(samples=taken, rows=len(rows))
    was_training = model.training
    model.eval()
    try:
        check_image_tokens(model, encoder, rows)
        report.checks.append("image tokens = image features")
        report.label_share = label_share(encoder, rows)
        report.checks.append("labels on assistant tokens only")
        if packing:
            check_packing(model, encoder, rows)
            report.checks.append("packed loss = unpacked loss")
    finally:
        model.train(was_training)
    return report
