"""Log-probabilities of the labelled tokens of a batch (labels as the chat encoder makes
them: ``IGNORE`` where nothing is predicted), shared by training objectives and evaluation.

The LM head runs only where a labelled token is predicted (transformers' ``logits_to_keep``
as a boolean mask): a one-word answer after a 30-token prompt needs one row of logits, not
thirty, which is most of the head's cost and of the logits' memory with a large vocabulary.
"""

from __future__ import annotations

import torch

from components.model.chat import IGNORE


def labelled_token_logps(model, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of every labelled token (flattened in row order, float32) and the
    row each belongs to; ``inputs`` is the batch without its labels."""
    keep = torch.zeros_like(labels, dtype=torch.bool)  # the positions whose next token is labelled
    keep[:, :-1] = labels[:, 1:] != IGNORE
    logits = model(**inputs, logits_to_keep=keep).logits  # (tokens, vocab)
    targets = labels[:, 1:][keep[:, :-1]]
    logps = logits.float().log_softmax(-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return logps, keep.nonzero(as_tuple=True)[0]


def model_sequence_logps(model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the labelled tokens' log-probabilities per row (B,)."""
    logps, rows = labelled_token_logps(model, inputs, labels)
    return logps.new_zeros(labels.shape[0]).index_add(0, rows, logps)


def labelled_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Number of labelled (predicted) tokens per sequence: the denominator of length-normalised losses."""
    return (labels[:, 1:] != IGNORE).sum(-1)
