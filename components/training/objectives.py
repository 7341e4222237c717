"""Training objectives behind one interface, ``(model, batch) -> (loss, metrics)``.

Supervised (next-token loss on the labelled tokens, averaged per token or per sample:
``SUPERVISED_OBJECTIVES``), preference optimisation (DPO / IPO and variants:
``PREFERENCE_OBJECTIVES``) and contrastive (SigLIP + FLIP) for the vision tower. Adding an
objective: its function and registry row here, and its name in the recipe's vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components.model.logps import labelled_token_logps, labelled_tokens, model_sequence_logps
from components.recipe import LOSS_AVERAGES, PREFERENCE_LOSSES

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


def _without_labels(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def lm_objective(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss on the labelled (assistant) tokens, averaged over them."""
    logps, _ = labelled_token_logps(model, _without_labels(batch), batch["labels"])
    return -logps.mean(), {}


def sample_mean_lm_objective(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token loss averaged over each sample's labelled tokens, then over the samples: a
    twenty-token caption weighs as much as a one-word answer (`lm_objective` averages over
    all labelled tokens of the batch, so long answers dominate it)."""
    tokens = labelled_tokens(batch["labels"])
    nll = -model_sequence_logps(model, _without_labels(batch), batch["labels"]) / tokens.clamp(min=1)
    return nll[tokens > 0].mean(), {}


SUPERVISED_OBJECTIVES: dict[str, Objective] = {  # a stage's `loss_average`
    "token": lm_objective,
    "sample": sample_mean_lm_objective,
}


def _per_token_delta(chosen_ratio, rejected_ratio, chosen_tokens, rejected_tokens):
    return chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)


@dataclass(frozen=True)
class PreferenceLoss:
    """One preference loss: per-pair loss from the policy/reference log-ratios (summed over the
    answer's tokens) and the answers' labelled token counts; `with_sft` adds the NLL of chosen."""

    per_pair: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, float],
                       torch.Tensor]
    needs_tokens: bool = True
    with_sft: bool = False


def _dpo(chosen_ratio, rejected_ratio, chosen_tokens, rejected_tokens, beta):
    return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))


PREFERENCE_OBJECTIVES: dict[str, PreferenceLoss] = {  # an align stage's `loss`
    "sigmoid": PreferenceLoss(_dpo, needs_tokens=False),
    "ipo": PreferenceLoss(lambda c, r, ct, rt, beta: (_per_token_delta(c, r, ct, rt) - 1 / (2 * beta)) ** 2),
    "sigmoid_norm": PreferenceLoss(lambda c, r, ct, rt, beta: -F.logsigmoid(beta * _per_token_delta(c, r, ct, rt))),
    "sigmoid_sft": PreferenceLoss(_dpo, with_sft=True),
}
for _names, _registry in ((LOSS_AVERAGES, SUPERVISED_OBJECTIVES), (PREFERENCE_LOSSES, PREFERENCE_OBJECTIVES)):
    if tuple(_registry) != _names:
        raise RuntimeError(f"objectives {list(_registry)} != the recipe's {list(_names)}")


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
    if loss_type not in PREFERENCE_OBJECTIVES:
        raise ValueError(f"unknown preference loss {loss_type!r}; expected one of {list(PREFERENCE_OBJECTIVES)}")
    spec = PREFERENCE_OBJECTIVES[loss_type]
    if spec.needs_tokens and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError(f"preference loss {loss_type!r} needs chosen_tokens and rejected_tokens")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    loss = spec.per_pair(chosen_ratio, rejected_ratio, chosen_tokens, rejected_tokens, beta).mean()
    metrics: dict[str, float] = {}
    if spec.with_sft:
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


REFERENCE_LOGPS = "reference_logps"  # a batch key: the rows' cached reference log-probs
# (policy, inputs without labels, labels) -> the reference's sequence log-probs per row
ReferenceFn = Callable[[nn.Module, dict, torch.Tensor], torch.Tensor]


class FrozenReference:
    """A frozen model as the reference (align's `reference: copy`), moved to the batches' device
    on first use (it is copied before accelerate moves the policy)."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)

    def __call__(self, policy: nn.Module, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        if next(self.model.parameters()).device != labels.device:
            self.model.to(labels.device)
        return model_sequence_logps(self.model, inputs, labels)


class PreferenceObjective:
    """Policy vs a frozen reference on batches of [chosen..., rejected...] rows.

    The reference is a model (kept frozen), a `ReferenceFn`, or None: then every batch must
    carry the rows' reference log-probs under `REFERENCE_LOGPS` (computed before training),
    which a batch may also carry with a reference given.

    Metrics per step (names as TRL logs them): rewards/chosen, rewards/rejected,
    rewards/margins, rewards/accuracies, logps/chosen, logps/rejected (plus
    loss/preference and loss/sft for `sigmoid_sft`); the loop logs the total `loss`.
    """

    def __init__(self, reference: nn.Module | ReferenceFn | None, beta: float, loss_type: str = "sigmoid",
                 sft_weight: float = 1.0):
        if loss_type not in PREFERENCE_OBJECTIVES:
            raise ValueError(f"unknown preference loss {loss_type!r}; expected one of {list(PREFERENCE_OBJECTIVES)}")
        self.reference = FrozenReference(reference) if isinstance(reference, nn.Module) else reference
        self.beta = beta
        self.loss_type = loss_type
        self.sft_weight = sft_weight

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k not in ("labels", REFERENCE_LOGPS)}
        ref_logps = batch.get(REFERENCE_LOGPS)
        if ref_logps is None:
            if self.reference is None:
                raise ValueError(f"the batch carries no {REFERENCE_LOGPS} and the objective has "
                                 "no reference model")
            with torch.no_grad():  # before the policy: nothing of it is in flight meanwhile
                ref_logps = self.reference(model, inputs, labels)
        logps = model_sequence_logps(model, inputs, labels)
        tokens = labelled_tokens(labels)
        half = labels.shape[0] // 2
        return preference_loss(
            logps[:half], logps[half:], ref_logps[:half], ref_logps[half:], self.beta, self.loss_type,
            chosen_tokens=tokens[:half], rejected_tokens=tokens[half:], sft_weight=self.sft_weight,
        )


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                negative_emb: torch.Tensor | None = None, same_text: torch.Tensor | None = None,
                ) -> torch.Tensor:
    """Sigmoid pairwise loss of SigLIP: matching pairs positive, every other pair negative.

    `negative_emb` adds hard-negative texts (one per image, NegCLIP-style) as extra
    columns that are negatives for every image. `same_text` (B, B, bool) marks pairs whose
    captions are identical: they are positives too (with few distinct captions, as printed
    digits have, calling them negatives keeps the loss at its chance plateau).
    """
    image_emb = F.normalize(image_emb, dim=-1)
    texts = text_emb if negative_emb is None else torch.cat([text_emb, negative_emb])
    logits = image_emb @ F.normalize(texts, dim=-1).T * scale.exp() + bias
    labels = -torch.ones_like(logits)
    positives = torch.eye(len(image_emb), dtype=torch.bool, device=logits.device)
    if same_text is not None:
        positives = positives | same_text
    labels[:, : len(image_emb)] += 2 * positives
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def drop_patches(tokens: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """FLIP: keep a random `keep` fraction of patch tokens per image (B, N, D) -> (B, K, D)."""
    if keep >= 1.0:
        return tokens
    b, n, d = tokens.shape
    k = max(1, int(round(n * keep)))
    idx = torch.rand(b, n, generator=generator, device=tokens.device).argsort(dim=1)[:, :k]
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, k, d))
