"""Two-process FSDP2 training on CPU (gloo) through accelerate, launched with
infra/accelerate/fsdp-cpu-2proc.yaml the way users launch it: each rank holds half the
weights while training, and the model the loop hands back (evaluated mid-run and saved by
rank 0) has the full weights of a one-process run on the doubled batch; every socket the
run listens on is 127.0.0.1."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from components.training.distributed import launch_command
from tests.components.training.helpers import PROBE, ROOT, run

BATCH, STEPS = 4, 3
CONFIG = ROOT / "infra" / "accelerate" / "fsdp-cpu-2proc.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    two, one = tmp_path_factory.mktemp("fsdp2"), tmp_path_factory.mktemp("fsdp1")
    args = ["--batch-size", str(BATCH), "--steps", str(STEPS), "--eval-every", "2"]
    launched, addresses = run(launch_command(
        [str(PROBE), "--out", str(two), *args, "--save"], num_processes=2,
        config_file=str(CONFIG), cpu=True), watch=True)
    assert launched.returncode == 0, launched.stdout[-4000:]
    args[1] = str(2 * BATCH)
    alone, _ = run([sys.executable, str(PROBE), "--out", str(one), *args], watch=False)
    assert alone.returncode == 0, alone.stdout[-4000:]
    load = lambda p: torch.load(p, weights_only=False)  # noqa: E731
    return (load(two / "rank0.pt"), load(two / "rank1.pt"), load(one / "rank0.pt"),
            load_file(two / "saved" / "model.safetensors"), addresses)


def test_each_rank_holds_a_shard_while_training(runs):
    r0, r1, ref, *_ = runs
    assert (r0["world"], r1["world"]) == (2, 2)
    full = ref["held"][0]
    assert r0["held"][0] + r1["held"][0] == full  # dim-0 shards: together, every weight once
    assert max(r0["held"][0], r1["held"][0]) < 0.6 * full


def test_matches_one_process_on_doubled_batch(runs):
    r0, r1, ref, _, _ = runs
    moved = max((ref["after"][k] - ref["before"][k]).abs().max().item() for k in ref["after"])
    assert moved > 1e-3
    for k in ref["after"]:
        assert r0["after"][k].shape == ref["after"][k].shape, k  # full weights, not a shard
        torch.testing.assert_close(r0["after"][k], ref["after"][k], rtol=1e-3, atol=1e-4)
        assert torch.equal(r0["after"][k], r1["after"][k]), k
    assert r0["samples"] == ref["samples"] == STEPS * 2 * BATCH
    for mine, theirs in zip(r0["history"], ref["history"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    # validation on rank 0 mid-run sees the gathered weights
    assert [e["step"] for e in r0["evals"]] == [e["step"] for e in ref["evals"]] == [2, 3]
    for mine, theirs in zip(r0["evals"], ref["evals"], strict=True):
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)


def test_rank0_saves_full_weights(runs):
    r0, _, ref, saved, _ = runs
    assert sorted(saved) == sorted(ref["after"])
    for k, v in saved.items():
        assert torch.equal(v, r0["after"][k]), k


@pytest.mark.skipif(not shutil.which("ss"), reason="`ss` (iproute2) not installed")
def test_listens_on_loopback_only(runs):
    *_, addresses = runs
    assert addresses, "saw no listening socket of the launched processes"
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
