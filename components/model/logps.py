"""Log-probabilities of the labelled tokens of a batch (labels as the chat encoder makes
them: ``IGNORE`` where nothing is predicted), shared by training objectives and evaluation."""

from __future__ import annotations

import torch

from components.model.chat import IGNORE


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
