"""`vlmforge bench bytecode` (flows/bench/runs.py): its "compiled" processes neither read nor
write bytecode, its "cached" ones read what the first of them wrote."""

from __future__ import annotations

import json
import subprocess
import sys

from flows.bench.runs import bench_bytecode, bytecode_envs
from flows.commands.bench import BENCHES

PROBE = "import json, sys, email.mime.text; print(json.dumps([sys.flags.dont_write_bytecode, sys.pycache_prefix]))"


def test_compiling_processes_write_nothing_and_cached_ones_fill_their_folder(tmp_path):
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    cache.mkdir()
    empty.mkdir()
    compiling, cached = bytecode_envs(str(cache), str(empty))
    for env, flag, prefix in ((compiling, 1, empty), (cached, 0, cache)):
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out) == [flag, str(prefix)]
    assert not any(empty.rglob("*.pyc"))
    assert any(p.name.startswith("text.") for p in cache.rglob("*.pyc"))  # email/mime/text.py


def test_the_bench_runs_end_to_end():
    result = bench_bytecode(repeats=1, imports="import email.mime.text")
    assert result["compiled_seconds"] > 0 and result["cached_seconds"] > 0 and result["ratio"] > 0
    assert "bytecode" in BENCHES
