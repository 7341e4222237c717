"""BPE tokenizer: special tokens, save/load, chat template, no automatic bos/eos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.corpus import generate_sample
from components.data.params import SOURCES
from components.data.sample import message_text
from components.data.tokenizer import (
    ASSISTANT_HEADER,
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    corpus_texts,
    train_tokenizer,
)

CONVERSATION = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    {"role": "user", "content": [{"type": "text", "text": "Where is the red circle?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "top left"}]},
]
EXPECTED = (
    "<|begin_of_text|>"
    "<|im_start|>user\n<image>What colour is the circle?<end_of_utterance>\n"
    "<|im_start|>assistant\nred<end_of_utterance>\n"
    "<|im_start|>user\nWhere is the red circle?<end_of_utterance>\n"
    "<|im_start|>assistant\ntop left<end_of_utterance>\n"
)


def texts() -> list[str]:
    out = []
    for source in SOURCES:
        for i in range(40):
            record = generate_sample(source, 0, "train", i).record
            out += [message_text(m) for m in record["messages"]]
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(texts(), 400, out), out


def test_special_tokens_are_single_ids_and_survive_save_load(saved: tuple[object, Path]) -> None:
    from transformers import AutoTokenizer

    tok, out = saved
    loaded = AutoTokenizer.from_pretrained(out)
    for t in (tok, loaded):
        ids = [t.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS]
        assert ids == list(range(len(SPECIAL_TOKENS)))
        for s, i in zip(SPECIAL_TOKENS, ids, strict=True):
            assert t.encode(s) == [i]
        assert set(SPECIAL_TOKENS) <= set(t.all_special_tokens)
        assert (t.pad_token, t.unk_token, t.bos_token, t.eos_token) == (
            "<pad>",
            "<unk>",
            "<|begin_of_text|>",
            "<end_of_utterance>",
        )
        assert t.tokenize("<row_3_col_4><image>x")[:2] == ["<row_3_col_4>", "<image>"]
    assert len(tok) == len(loaded) == 400


def test_no_automatic_bos_or_eos(saved: tuple[object, Path]) -> None:
    from transformers import AutoTokenizer

    tok, out = saved
    for t in (tok, AutoTokenizer.from_pretrained(out)):
        ids = t("a red circle at the top left").input_ids
        assert t.bos_token_id not in ids and t.eos_token_id not in ids
        assert t.decode(ids) == "a red circle at the top left"


def test_chat_template_exact(saved: tuple[object, Path]) -> None:
    from transformers import AutoTokenizer

    tok, out = saved
    loaded = AutoTokenizer.from_pretrained(out)
    for t in (tok, loaded):
        assert t.chat_template == CHAT_TEMPLATE
        assert t.apply_chat_template(CONVERSATION, tokenize=False) == EXPECTED
        prompt = t.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
        assert prompt.endswith("<end_of_utterance>\n" + ASSISTANT_HEADER)
        assert t.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == (
            "<|begin_of_text|><|im_start|>user\nhi<end_of_utterance>\n"
        )
    ids = loaded(EXPECTED).input_ids
    assert ids == tok(EXPECTED).input_ids and ids[0] == loaded.bos_token_id
    assert loaded.decode(ids) == EXPECTED


def test_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match="vocab_size 100 too small"):
        train_tokenizer(["abc"], 100)


def test_corpus_texts_and_tokenizer_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoTokenizer

    from components.data.__main__ import main

    params = tmp_path / "params.yaml"
    counts = {"scenes_caption": 3, "text": 3, "preference": 4}
    params.write_text(json.dumps({"data": {"vocab_size": 400, "splits": {"train": counts}}}))
    main(["generate", "--params", str(params), "--out", str(tmp_path / "shards"), "--workers", "1"])
    found = list(corpus_texts(tmp_path / "shards"))
    assert "user\nDescribe the image." in found
    pref = generate_sample("preference", 0, "train", 0).record
    assert pref["chosen"] in found and pref["rejected"] in found
    capsys.readouterr()
    main(
        [
            "tokenizer",
            "--params",
            str(params),
            "--shards",
            str(tmp_path / "shards"),
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "tok")
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").chat_template == CHAT_TEMPLATE


def test_split_digits_reads_a_number_out_one_token_per_digit(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    corpus = ["What number is written in the image? 672 and 1234"] * 50
    merged = train_tokenizer(corpus, 400)
    split = train_tokenizer(corpus, 400, tmp_path, split_digits=True)
    assert any(len(t.strip("Ġ")) > 1 and t.strip("Ġ").isdigit() for t in merged.tokenize("672 1234"))
    for tok in (split, AutoTokenizer.from_pretrained(tmp_path)):
        assert [t for t in tok.tokenize("672 1234") if t != "Ġ"] == list("6721234")
        assert tok.decode(tok("read 0907 now").input_ids) == "read 0907 now"
        assert tok.tokenize("number")  == merged.tokenize("number")  # words merge as before
