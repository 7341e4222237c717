"""Training objectives: preference optimisation (DPO / IPO and variants) and contrastive (SigLIP + FLIP)."""

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


def labelled_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Number of labelled (predicted) tokens per sequence: the denominator of length-normalised losses."""
    return (labels[:, 1:] != IGNORE).sum(-1)


def sample_mean_lm_objective(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss averaged over each sample's labelled tokens, then over the samples: a
    twenty-token caption weighs as much as a one-word answer (`lm_objective` averages over
    all labelled tokens of the batch, so long answers dominate it)."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    tokens = labelled_tokens(batch["labels"])
    nll = -sequence_logps(logits, batch["labels"]) / tokens.clamp(min=1)
    return nll[tokens > 0].mean(), {}


PREFERENCE_LOSSES = ("sigmoid", "ipo", "sigmoid_norm", "sigmoid_sft")


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    *,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    sft_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Preference loss from summed sequence log-probs, as TRL's `DPOTrainer` computes it.

    - `sigmoid`: DPO, -log sigmoid(beta * (chosen log-ratio - rejected log-ratio));
    - `ipo`: IPO on per-token log-ratios, (delta / tokens - 1 / (2 beta))^2 (TRL normalises by length);
    - `sigmoid_norm`: DPO on per-token (length-normalised) log-ratios;
    - `sigmoid_sft`: DPO + `sft_weight` x the mean NLL per chosen token (TRL's
      `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, sft_weight]`).

    `chosen_tokens` / `rejected_tokens` are the labelled token counts per sequence,
    needed by every loss but `sigmoid`. Rewards are beta x the log-ratios (unnormalised).
    """
    if loss_type not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown preference loss {loss_type!r}; expected one of {list(PREFERENCE_LOSSES)}")
    if loss_type != "sigmoid" and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError(f"preference loss {loss_type!r} needs chosen_tokens and rejected_tokens")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    metrics: dict[str, float] = {}
    if loss_type in ("sigmoid", "sigmoid_sft"):
        loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    else:
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        if loss_type == "ipo":
            loss = ((delta - 1 / (2 * beta)) ** 2).mean()
        else:
            loss = -F.logsigmoid(beta * delta).mean()
    if loss_type == "sigmoid_sft":
        sft = -policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
        metrics["loss/preference"] = loss.item()
        metrics["loss/sft"] = sft.item()
        loss = loss + sft_weight * sft
    chosen_reward = beta * chosen_ratio.detach()
    rejected_reward = beta * rejected_ratio.detach()
    metrics.update({
        "rewards/chosen": chosen_reward.mean().item(),
        "rewards/rejected": rejected_reward.mean().item(),
        "rewards/margins": (chosen_reward - rejected_reward).mean().item(),
        "rewards/accuracies": (chosen_reward > rejected_reward).float().mean().item(),
        "logps/chosen": policy_chosen.detach().mean().item(),
        "logps/rejected": policy_rejected.detach().mean().item(),
    })
    return loss, metrics


class PreferenceObjective:
    """Policy vs a frozen reference on batches of [chosen..., rejected...] rows.

    Metrics per step (names as TRL logs them): rewards/chosen, rewards/rejected,
    rewards/margins, rewards/accuracies, logps/chosen, logps/rejected (plus
    loss/preference and loss/sft for `sigmoid_sft`); the loop logs the total `loss`.
    """

    def __init__(self, reference: nn.Module, beta: float, loss_type: str = "sigmoid", sft_weight: float = 1.0):
        if loss_type not in PREFERENCE_LOSSES:
            raise ValueError(f"unknown preference loss {loss_type!r}; expected one of {list(PREFERENCE_LOSSES)}")
        self.reference = reference.eval().requires_grad_(False)
        self.beta = beta
        self.loss_type = loss_type
        self.sft_weight = sft_weight

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logps = sequence_logps(model(**inputs).logits, labels)
        with torch.no_grad():
            ref_logps = sequence_logps(self.reference(**inputs).logits, labels)
        tokens = labelled_tokens(labels)
        half = labels.shape[0] // 2
        return preference_loss(
            logps[:half], logps[half:], ref_logps[:half], ref_logps[half:], self.beta, self.loss_type,
            chosen_tokens=tokens[:half], rejected_tokens=tokens[half:], sft_weight=self.sft_weight,
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
