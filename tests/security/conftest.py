"""The security suite's fixtures: one session store, and the tiny VLM served from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import registry
from flows.commands.serve import stop_server
from tests.security.helpers import Server, register_in, serve


@pytest.fixture(scope="session")
def serving_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-store")


@pytest.fixture
def serving_home(serving_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The suite's store, (re)configured for this test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # never touch a real server
    registry.configure(serving_store)
    return serving_store


@pytest.fixture(scope="session")
def tiny_model_uri(serving_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # whatever an earlier test left
        return register_in(serving_store, tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="session")
def tiny_server(serving_store: Path, tiny_model_uri: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny VLM behind `vlmforge serve` (default timeout), shared by the suite."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        running = serve(serving_store, tiny_model_uri,
                    tmp_path_factory.mktemp("server") / "server.log")
    yield running
    stop_server(running.proc)
