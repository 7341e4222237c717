"""Our preference losses equal TRL's `DPOTrainer` loss on the same model, reference and tokens."""

from __future__ import annotations

import os

import pytest
import torch
from accelerate.state import AcceleratorState

from components.model.backbones import load_text_backbone
from components.model.chat import IGNORE
from components.training.objectives import PreferenceObjective

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
# rows: chosen 1, chosen 2, rejected 1, rejected 2 (TRL's and our [chosen..., rejected...] layout);
# 1 marks completion (answer) tokens, of different lengths so length normalisation matters
COMPLETION = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0],
                           [0, 0, 0, 0, 1, 1, 1, 1],
                           [0, 0, 0, 1, 0, 0, 0, 0],
                           [0, 0, 0, 0, 1, 1, 0, 0]])

# ours -> TRL's loss_type / loss_weights
VARIANTS = {
    "sigmoid": (["sigmoid"], None),
    "ipo": (["ipo"], None),
    "sigmoid_norm": (["sigmoid_norm"], None),
    "sigmoid_sft": (["sigmoid", "sft"], [1.0, 0.3]),
}


@pytest.fixture
def isolated_accelerate():
    """The trainer sets up accelerate's process-wide state (and env vars): undo it for later tests."""
    env = dict(os.environ)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ.clear()
    os.environ.update(env)


@pytest.mark.parametrize("loss", list(VARIANTS))
def test_preference_loss_and_rewards_equal_trl_dpo_trainer(tokenizer, tmp_path, loss, isolated_accelerate):
    torch.manual_seed(0)
    policy = load_text_backbone(TEXT, vocab_size=len(tokenizer))
    reference = load_text_backbone(TEXT, vocab_size=len(tokenizer))  # different random weights
    loss_type, weights = VARIANTS[loss]
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=loss_type, loss_weights=weights,
                         report_to=[], use_cpu=True, bf16=False)
    data = datasets.Dataset.from_dict({"prompt": ["hi"], "chosen": [" red"], "rejected": [" blue"]})
    trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                             processing_class=tokenizer)
    ids = torch.randint(len(tokenizer) // 2, len(tokenizer), COMPLETION.shape, generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    expected = trainer._compute_loss(trainer.model, {"input_ids": ids, "attention_mask": attention,
                                                     "completion_mask": COMPLETION}, return_outputs=False)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    objective = PreferenceObjective(reference, beta=0.3, loss_type=loss, sft_weight=0.3)
    batch = {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(COMPLETION == 0, IGNORE)}
    ours, metrics = objective(trainer.model, batch)

    assert ours.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/chosen", "logps/rejected"):
        assert metrics[name] == pytest.approx(trl_metrics[name], rel=1e-4, abs=1e-6), name
