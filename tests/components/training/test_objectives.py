"""DPO/IPO on known log-probabilities, sequence log-probs (the LM head only where a labelled
token is predicted, equal to the full logits' on every architecture), SigLIP loss, FLIP patch drop."""

from __future__ import annotations

import math

import pytest
import torch

from components.model.architectures import ARCHITECTURES
from components.model.chat import IGNORE
from components.model.logps import model_sequence_logps
from components.training.objectives import (
    drop_patches,
    lm_objective,
    preference_loss,
    sample_mean_lm_objective,
    siglip_loss,
)
from tests.components.model.helpers import build, colour_batch


class _FixedLogits(torch.nn.Module):
    """A 'model' returning the given logits, whatever the batch (those of a boolean
    ``logits_to_keep``'s positions, flattened, as transformers' models do)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, logits_to_keep=0, **_):
        logits = self.logits[logits_to_keep] if isinstance(logits_to_keep, torch.Tensor) else self.logits
        return type("Out", (), {"logits": logits})()


def test_sample_mean_loss_weighs_every_sample_alike():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.full((3, 6), IGNORE)
    labels[0, 1:5] = torch.tensor([1, 2, 3, 4])  # a four-token answer
    labels[1, 5] = 7  # a one-token answer
    # sample 2 has no labelled token (e.g. its answer did not fit): it does not count
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE, reduction="none").view(3, 5)
    per_sample = [nll[0, 0:4].mean(), nll[1, 4]]
    loss, _ = sample_mean_lm_objective(_FixedLogits(logits), {"input_ids": None, "labels": labels})
    assert loss.item() == pytest.approx(((per_sample[0] + per_sample[1]) / 2).item(), rel=1e-5)
    token_mean = nll[labels[:, 1:] != IGNORE].mean()
    assert loss.item() != pytest.approx(token_mean.item(), rel=1e-3)  # the default would differ


def test_dpo_sigmoid_loss_on_known_logps():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    loss, m = preference_loss(pc, pr, rc, rr, beta=0.5)
    # margins: (1 - (-1)) = 2 and (0 - 1) = -1
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["rewards/chosen"] == pytest.approx((0.5 * 1 + 0.5 * 0) / 2)
    assert m["rewards/rejected"] == pytest.approx((0.5 * -1 + 0.5 * 1) / 2)
    assert m["rewards/margins"] == pytest.approx((0.5 * 2 + 0.5 * -1) / 2)
    assert m["rewards/accuracies"] == pytest.approx(0.5)
    assert m["logps/chosen"] == pytest.approx(-1.5) and m["logps/rejected"] == pytest.approx(-2.0)


def test_ipo_loss_on_known_logps_is_per_token():
    # log-ratios 0 (chosen) and -1 (rejected) over 2 and 4 tokens: delta = 0/2 - (-1/4) = 0.25
    loss, _ = preference_loss(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([0.0]),
                              torch.tensor([0.0]), beta=0.25, loss_type="ipo",
                              chosen_tokens=torch.tensor([2]), rejected_tokens=torch.tensor([4]))
    assert loss.item() == pytest.approx((0.25 - 2) ** 2)
    with pytest.raises(ValueError, match="needs chosen_tokens"):
        preference_loss(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                        beta=0.25, loss_type="ipo")


def test_sigmoid_sft_adds_the_weighted_chosen_nll_per_token():
    pc, pr = torch.tensor([-2.0, -6.0]), torch.tensor([-3.0, -5.0])
    rc, rr = torch.tensor([-2.0, -5.0]), torch.tensor([-2.0, -5.0])
    tokens = dict(chosen_tokens=torch.tensor([2, 3]), rejected_tokens=torch.tensor([3, 3]))
    dpo, _ = preference_loss(pc, pr, rc, rr, beta=1.0)
    loss, m = preference_loss(pc, pr, rc, rr, beta=1.0, loss_type="sigmoid_sft", sft_weight=0.5, **tokens)
    # margins (0 - -1) = 1 and (-1 - 0) = -1; NLL per chosen token = (2 + 6) / (2 + 3) = 1.6
    expected_dpo = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 / (1 + math.exp(1)))) / 2
    assert dpo.item() == pytest.approx(expected_dpo)
    assert loss.item() == pytest.approx(expected_dpo + 0.5 * 1.6)
    assert m["loss/preference"] == pytest.approx(expected_dpo) and m["loss/sft"] == pytest.approx(1.6)


def test_length_normalised_dpo_on_known_logps():
    loss, _ = preference_loss(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([-6.0]),
                              torch.tensor([-6.0]), beta=2.0, loss_type="sigmoid_norm",
                              chosen_tokens=torch.tensor([2]), rejected_tokens=torch.tensor([3]))
    # per-token log-ratios 2/2 = 1 and -3/3 = -1: -log sigmoid(2 * 2)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-4.0))))


def test_sequence_logps_sum_labelled_tokens_only():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[IGNORE, 1, 0]])  # predicts token 1 from pos 0, token 0 from pos 1
    logps = model_sequence_logps(_FixedLogits(logits), {}, labels)
    assert logps.item() == pytest.approx(math.log(0.5) + math.log(0.25))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_on_labelled_positions_only_equals_the_full_logits(arch, tokenizer, tmp_path):
    _, _, model, processor = build(arch, tokenizer, tmp_path)
    batch = colour_batch(processor)
    batch["labels"][1, -1] = IGNORE  # rows differ in what they label
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    full = model(**inputs).logits[:, :-1].float().log_softmax(-1)
    labels, mask = batch["labels"][:, 1:], batch["labels"][:, 1:] != IGNORE
    expected = (full.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(-1)
    torch.testing.assert_close(model_sequence_logps(model, inputs, batch["labels"]), expected)
    loss, _ = lm_objective(model, batch)
    torch.testing.assert_close(loss, model(**batch).loss)  # transformers' own loss, full logits


def test_siglip_loss_prefers_matching_pairs():
    emb = torch.eye(4)
    good = siglip_loss(emb, emb, torch.tensor(math.log(10.0)), torch.tensor(-5.0))
    bad = siglip_loss(emb, emb.roll(1, 0), torch.tensor(math.log(10.0)), torch.tensor(-5.0))
    assert good < bad


def test_siglip_loss_counts_identical_captions_as_positives():
    # images 0 and 1 share a caption: both texts are theirs, so matching image 0 to text 1
    # is rewarded, not punished, and the loss of a model that does so is the lower one
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = images.clone()
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-5.0)
    with_dupes = siglip_loss(images, texts, scale, bias, same_text=same)
    as_negatives = siglip_loss(images, texts, scale, bias)
    assert with_dupes < as_negatives
    assert siglip_loss(images, texts, scale, bias, same_text=torch.eye(3, dtype=torch.bool)) == as_negatives


def test_drop_patches_keeps_a_fraction_of_real_tokens():
    tokens = torch.arange(2 * 16 * 3, dtype=torch.float).view(2, 16, 3)
    kept = drop_patches(tokens, 0.25, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 4, 3)
    for b in range(2):
        rows = {tuple(r.tolist()) for r in tokens[b]}
        assert all(tuple(r.tolist()) in rows for r in kept[b])
    assert drop_patches(tokens, 1.0) is tokens
