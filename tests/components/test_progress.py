"""Progress bars: quiet off a TTY by default, forced on or off by VLMFORGE_PROGRESS."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from components.progress import disabled, progress
from components.recipe import TrainSettings
from components.training import loop
from components.training.loop import train


class _NotATTY(io.StringIO):
    def isatty(self) -> bool:
        return False


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draw(stream: io.StringIO, **kwargs) -> str:
    for _ in progress(range(5), desc="work", file=stream, mininterval=0, **kwargs):
        pass
    return stream.getvalue()


@pytest.mark.parametrize("value, expected", [("1", False), ("on", False), ("0", True),
                                             ("false", True), ("", None)])
def test_env_var_maps_to_tqdm_disable(monkeypatch, value, expected):
    monkeypatch.setenv("VLMFORGE_PROGRESS", value)
    assert disabled() is expected


def test_forced_on_writes_to_a_non_tty_stream(monkeypatch):
    monkeypatch.setenv("VLMFORGE_PROGRESS", "1")
    out = _draw(_NotATTY())
    assert "work" in out and "5/5" in out


def test_default_is_quiet_off_a_tty_and_draws_on_one(monkeypatch):
    monkeypatch.delenv("VLMFORGE_PROGRESS", raising=False)
    assert _draw(_NotATTY()) == ""
    assert "5/5" in _draw(_TTY())


def test_forced_off_and_disabled_rank_are_quiet_even_on_a_tty(monkeypatch):
    monkeypatch.setenv("VLMFORGE_PROGRESS", "0")
    assert _draw(_TTY()) == ""
    monkeypatch.setenv("VLMFORGE_PROGRESS", "1")
    assert _draw(_TTY(), enabled=False) == ""


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))


def _objective(model, batch):
    return ((model.w * batch["input_ids"].float()).mean() - 1) ** 2, {}


BATCHES = [{"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3)}]


@pytest.mark.parametrize("forced", ["1", None])
def test_training_loop_bar_goes_to_stderr_only_when_asked(monkeypatch, capsys, forced):
    if forced is None:
        monkeypatch.delenv("VLMFORGE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("VLMFORGE_PROGRESS", forced)
    monkeypatch.setattr(loop, "progress",  # draw every step, however fast
                        lambda *a, **k: progress(*a, mininterval=0, **k))
    train(_Tiny(), BATCHES, TrainSettings(steps=3, warmup_steps=1, log_every=1), _objective)
    err = capsys.readouterr().err  # capsys's stderr is not a TTY
    if forced:
        assert "train" in err and "3/3" in err and "loss=" in err
    else:
        assert "train" not in err and "3/3" not in err
