"""Fixtures for registry tests: one real SQLite store per session, tiny model dirs."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
if importlib.util.find_spec("registry") is None:  # project not pip-installed yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import registry  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ ' ' + line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@pytest.fixture(scope="session")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-home")


@pytest.fixture
def home(store_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The session store, (re)configured for this test; no run leaks out of a test."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # never touch a real server
    registry.configure(store_home)
    yield store_home
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def model_name() -> str:
    return f"vlm-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in 'HF directory' of plain files (registration needs no real model)."""
    d = tmp_path_factory.mktemp("plain") / "checkpoint"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "fake"}')
    (d / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (d / "sub" / "notes.txt").write_text("hello")
    return d


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, randomly initialised Idefics3 model + processor (~200 kB) saved to disk."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    special = ["<pad>", "<unk>", "<|im_start|>", "<end_of_utterance>", "<image>"]
    special += ["<fake_token_around_image>", "<global-img>"]
    special += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    words = ["User", "Assistant", ":", "what", "is", "this", "?", "a", "red", "square"]
    words += [f"w{i}" for i in range(40)]
    vocab = {t: i for i, t in enumerate(special + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special[2:]})
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    # image_seq_len = (image_size / patch_size)^2 / scale_factor^2 = (32/8)^2 / 4
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<|im_start|>"],
            eos_token_id=vocab["<end_of_utterance>"],
        ),
        scale_factor=2,
        image_token_id=vocab["<image>"],
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = vocab["<end_of_utterance>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    out = tmp_path_factory.mktemp("tiny-vlm") / "hf"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
