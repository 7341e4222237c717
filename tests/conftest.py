"""Test-wide environment: an isolated VLMFORGE_HOME and the offline defaults, set
before any heavy import; every server a test starts listens on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile

os.environ["VLMFORGE_HOME"] = tempfile.mkdtemp(prefix="vlmforge-test-home-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
# Prefect logs "Stopping temporary server" at interpreter exit, after pytest closed stdout.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from flows.environment import configure_environment  # noqa: E402

configure_environment()

# Tiny backbones and a tokenizer shared by the model and training tests.


import pytest  # noqa: E402

from components.data.tokenizer import train_tokenizer  # noqa: E402
from components.model.backbones import load_text_backbone, load_vision_backbone  # noqa: E402

TEXTS = ["user\nWhat colour is the circle?", "assistant\nred", "Is there a blue square?",
         "assistant\nyes", "Describe the image.", "a red circle at the top left."] * 40
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return train_tokenizer(TEXTS, 400, tmp_path_factory.mktemp("tok"))


@pytest.fixture
def backbones(tokenizer):
    import torch

    torch.manual_seed(0)
    return load_vision_backbone(VISION), load_text_backbone(TEXT, vocab_size=len(tokenizer))
