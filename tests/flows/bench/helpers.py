"""Running a bench through `vlmforge bench NAME --json` at a test's small size."""

from __future__ import annotations

import json

from flows.commands.bench import run_bench


def small_bench_json(monkeypatch, capsys, name: str, module, function: str, **small) -> dict:
    """`run_bench(name, --json)` with `module.function` called at the sizes in `small`
    (the command's own arguments passed through); the printed JSON."""
    real = getattr(module, function)
    monkeypatch.setattr(module, function, lambda **kwargs: real(**kwargs, **small))
    assert run_bench(name, "configs/tiny.yaml", as_json=True) == 0
    return json.loads(capsys.readouterr().out)
