"""A checkpoint is used only when it matches the manifest written last: a truncated (a host
crash before the data reached the disk), altered or manifest-less newest checkpoint is
skipped with a warning naming it and why, the run resumes from the one before and ends
with the uninterrupted run's weights, and the bad one is replaced by the new save."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch

from components.training.checkpoints import (
    MANIFEST_FILE,
    list_checkpoints,
    newest_verified,
    verify_checkpoint,
)

_spec = importlib.util.spec_from_file_location("tiny_trainer",
                                               Path(__file__).with_name("tiny_trainer.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

LOOP_LOG = "components.training.checkpoints"


@pytest.fixture(scope="module")
def reference():
    return tiny.run(None)


@pytest.fixture
def trained(tmp_path) -> Path:
    """A finished 6-step run: checkpoints at steps 4 and 6 (keep 2)."""
    ckpt = tmp_path / "ckpt"
    tiny.run(ckpt)
    assert [s for s, _ in list_checkpoints(ckpt)] == [4, 6]
    return ckpt


def _resume(ckpt: Path, caplog) -> tuple[dict, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOOP_LOG):
        out = tiny.run(ckpt)
    return out, [r.getMessage() for r in caplog.records if r.name == LOOP_LOG]


def _assert_same_run(out: dict, reference: dict) -> None:
    assert out["losses"] == reference["losses"] and out["lrs"] == reference["lrs"]
    for k, v in reference["weights"].items():
        assert torch.equal(torch.tensor(out["weights"][k]), torch.tensor(v)), k


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(trained, reference, caplog):
    (trained / "step-00000006" / "model.safetensors").write_bytes(b"")  # what a host crash leaves
    assert "model.safetensors has 0 bytes" in verify_checkpoint(trained / "step-00000006")
    out, warnings = _resume(trained, caplog)
    assert out["resumed_from"] == 4
    assert any("step-00000006" in w and "model.safetensors has 0 bytes" in w for w in warnings), warnings
    _assert_same_run(out, reference)
    # the bad step 6 was replaced by the new save, nothing half-done is left
    assert [s for s, _ in list_checkpoints(trained)] == [4, 6]
    assert verify_checkpoint(trained / "step-00000006") is None
    assert sorted(p.name for p in trained.iterdir()) == ["step-00000004", "step-00000006"]


def test_an_altered_byte_is_caught_by_the_hash(trained, reference, caplog):
    path = trained / "step-00000006" / "optimizer.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the sha256 tells
    out, warnings = _resume(trained, caplog)
    assert out["resumed_from"] == 4
    assert any("step-00000006" in w and "optimizer.bin does not match its sha256" in w
               for w in warnings), warnings
    _assert_same_run(out, reference)


def test_a_checkpoint_without_its_manifest_is_ignored_with_a_warning(trained, reference, caplog):
    (trained / "step-00000006" / MANIFEST_FILE).unlink()
    assert newest_verified(trained) == trained / "step-00000004"
    out, warnings = _resume(trained, caplog)
    assert out["resumed_from"] == 4
    assert any("step-00000006" in w and "no manifest.json" in w for w in warnings), warnings
    _assert_same_run(out, reference)


def test_a_manifest_that_is_not_json_falls_back(trained, caplog):
    (trained / "step-00000006" / MANIFEST_FILE).write_text('{"format": 1, "files": {"loop')
    out, warnings = _resume(trained, caplog)
    assert out["resumed_from"] == 4
    assert any("step-00000006" in w and "unreadable manifest.json" in w for w in warnings), warnings


def test_when_no_checkpoint_is_usable_the_run_starts_afresh(trained, reference, caplog):
    for step in ("step-00000004", "step-00000006"):
        (trained / step / "random_states_0.pkl").write_bytes(b"\0" * 10)
    out, warnings = _resume(trained, caplog)
    assert out["resumed_from"] == 0
    assert sum("random_states_0.pkl has 10 bytes" in w for w in warnings) == 2, warnings
    _assert_same_run(out, reference)


def test_the_manifest_lists_every_file_with_size_and_sha256(trained):
    step = trained / "step-00000006"
    manifest = json.loads((step / MANIFEST_FILE).read_text())
    on_disk = sorted(p.name for p in step.iterdir() if p.name != MANIFEST_FILE)
    assert sorted(manifest["files"]) == on_disk
    assert {"loop_state.json", "model.safetensors", "optimizer.bin",
            "random_states_0.pkl"} <= set(on_disk)
    for name, entry in manifest["files"].items():
        assert entry["size"] == (step / name).stat().st_size and len(entry["sha256"]) == 64
