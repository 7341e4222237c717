"""Two-process data-parallel training on CPU (gloo) through the launcher users take:
`python -m components.training.distributed` = `accelerate launch` with a loopback-only
rendezvous. Both ranks see different data, end with identical weights, and match a
one-process run on the doubled batch, with and without a replayed second forward per step
(an align stage's `replay`); every socket the run listens on is 127.0.0.1."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from components.training.distributed import cpu_args, launch_command
from tests.components.training.helpers import PROBE, run

BATCH, STEPS = 4, 3


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "replay"])
def runs(tmp_path_factory, request):
    two, one = tmp_path_factory.mktemp("ddp2"), tmp_path_factory.mktemp("ddp1")
    replay = ["--replay"] if request.param else []
    launched, addresses = run(launch_command(
        [str(PROBE), "--out", str(two), "--batch-size", str(BATCH), "--steps", str(STEPS), *replay],
        num_processes=2, cpu=True), watch=True)
    assert launched.returncode == 0, launched.stdout[-4000:]
    alone, _ = run([sys.executable, str(PROBE), "--out", str(one), "--batch-size", str(2 * BATCH),
                    "--steps", str(STEPS), *replay], watch=False)
    assert alone.returncode == 0, alone.stdout[-4000:]
    load = lambda p: torch.load(p, weights_only=False)  # noqa: E731
    return (load(two / "rank0.pt"), load(two / "rank1.pt"), load(one / "rank0.pt"), addresses)


def test_two_ranks_see_different_data(runs):
    r0, r1, ref, _ = runs
    assert (r0["rank"], r1["rank"], r0["world"], r1["world"]) == (0, 1, 2, 2)
    assert len(r0["seen"]) == len(r1["seen"]) == STEPS
    for a, b, both in zip(r0["seen"], r1["seen"], ref["seen"], strict=True):
        assert not torch.equal(a, b)
        assert torch.equal(torch.cat([a, b]), both)  # together: the one-process batch


def test_gradients_are_averaged_weights_identical(runs):
    r0, r1, _, _ = runs
    moved = max((r0["after"][k] - r0["before"][k]).abs().max().item() for k in r0["after"])
    assert moved > 1e-3
    for k in r0["after"]:
        assert torch.equal(r0["after"][k], r1["after"][k]), k


def test_matches_one_process_on_doubled_batch(runs):
    r0, r1, ref, _ = runs
    for k in ref["after"]:
        torch.testing.assert_close(r0["after"][k], ref["after"][k], rtol=1e-3, atol=1e-4)
    assert r0["samples"] == r1["samples"] == ref["samples"] == STEPS * 2 * BATCH
    # logged loss is the mean over ranks, the same on every rank
    assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]]
    for mine, theirs in zip(r0["history"], ref["history"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


@pytest.mark.skipif(not shutil.which("ss"), reason="`ss` (iproute2) not installed")
def test_rendezvous_and_gloo_listen_on_loopback_only(runs):
    *_, addresses = runs
    assert addresses, "saw no listening socket of the launched processes"
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_cpu_launch_asks_for_torchrun_not_the_one_process_launcher():
    args = cpu_args(2, port=12345)
    assert "--cpu" not in args  # `--cpu --num_processes 2` would run ONE process
    assert args[args.index("--num_processes") + 1] == "2"
    assert args[args.index("--main_process_ip") + 1] == "127.0.0.1"
