"""Training objectives: preference optimisation (DPO / IPO) and contrastive (SigLIP + FLIP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.training.batching import IGNORE


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the labelled tokens per sequence (labels shifted by one)."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1)


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO (sigmoid, as in TRL's `loss_type="sigmoid"`) or IPO loss, with reward statistics."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}")
    chosen_reward = beta * (policy_chosen - ref_chosen).detach()
    rejected_reward = beta * (policy_rejected - ref_rejected).detach()
    metrics = {
        "reward_chosen": chosen_reward.mean().item(),
        "reward_rejected": rejected_reward.mean().item(),
        "reward_margin": (chosen_reward - rejected_reward).mean().item(),
        "reward_accuracy": (chosen_reward > rejected_reward).float().mean().item(),
    }
    return losses.mean(), metrics


class PreferenceObjective:
    """Policy vs a frozen reference on batches of [chosen..., rejected...] rows."""

    def __init__(self, reference: nn.Module, beta: float, loss_type: str = "sigmoid"):
        self.reference = reference.eval().requires_grad_(False)
        self.beta = beta
        self.loss_type = loss_type

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logps = sequence_logps(model(**inputs).logits, labels)
        with torch.no_grad():
            ref_logps = sequence_logps(self.reference(**inputs).logits, labels)
        half = labels.shape[0] // 2
        return preference_loss(
            logps[:half], logps[half:], ref_logps[:half], ref_logps[half:], self.beta, self.loss_type
        )


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                negative_emb: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid pairwise loss of SigLIP: matching pairs positive, every other pair negative.

    `negative_emb` adds hard-negative texts (one per image, NegCLIP-style) as extra
    columns that are negatives for every image.
    """
    image_emb = F.normalize(image_emb, dim=-1)
    texts = text_emb if negative_emb is None else torch.cat([text_emb, negative_emb])
    logits = image_emb @ F.normalize(texts, dim=-1).T * scale.exp() + bias
    labels = -torch.ones_like(logits)
    labels[:, : len(image_emb)] += 2 * torch.eye(len(image_emb), device=logits.device)
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def drop_patches(tokens: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """FLIP: keep a random `keep` fraction of patch tokens per image (B, N, D) -> (B, K, D)."""
    if keep >= 1.0:
        return tokens
    b, n, d = tokens.shape
    k = max(1, int(round(n * keep)))
    idx = torch.rand(b, n, generator=generator, device=tokens.device).argsort(dim=1)[:, :k]
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, k, d))
