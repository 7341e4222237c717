"""7. A small soak (the `vlmforge bench soak` code): good and hostile requests mixed at
concurrency 8 against a `vlmforge serve` server: no 5xx, every good request answered, every
hostile one a 4xx without a stack trace, and memory within the bound the caps imply."""

from __future__ import annotations

from pathlib import Path

from flows.bench.soak import HOSTILE_KINDS, bench_soak


def test_a_small_soak(serving_home: Path, tiny_model_uri: str) -> None:
    result = bench_soak(tiny_model_uri, requests=60, concurrency=8, hostile_every=5)
    assert result["responses_5xx"] == 0 and result["no_response"] == 0, result
    answered, good = result["good_answered"].split("/")
    assert answered == good == str(result["good"]), result
    refused, hostile = result["hostile_4xx"].split("/")
    assert refused == hostile == "12", result
    assert set(result["hostile_by_kind"]) == set(HOSTILE_KINDS)
    assert result["leaking_responses"] == 0
    assert result["peak_within_bound"], result
    assert result["server_alive"]
