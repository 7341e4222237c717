"""Process environment for offline, embedded use: set before heavy imports.

Telemetry off for Prefect, MLflow, DVC and Hugging Face; no hub access; Prefect's
embedded server gets time to start on a busy 2-core machine; OpenMP threads sleep
instead of spinning when the machine is busy.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where dvc.yaml, configs/ and infra/ live

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_UI_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_WAIT_POLICY": "PASSIVE",
    "TRANSFORMERS_VERBOSITY": "error",
}


def vlmforge_home() -> Path:
    """Where the embedded stores live: $VLMFORGE_HOME or ./.vlmforge."""
    return Path(os.environ.get("VLMFORGE_HOME", ".vlmforge")).resolve()


def data_workspace(recipe_name: str) -> Path:
    """The DVC workspace of a recipe's data stage (`flows.stages.data.workspace_for`)."""
    return vlmforge_home() / "data" / recipe_name


def configure_environment() -> Path:
    """Set the offline defaults (existing variables win) and return the home directory."""
    home = vlmforge_home()
    home.mkdir(parents=True, exist_ok=True)
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    return home


def configure_stores() -> Path:
    """The offline defaults, then the tracking store under the home (`registry.configure`);
    what every command and scheduled flow does first. Returns the home directory."""
    home = configure_environment()
    import registry

    registry.configure(home)
    return home


def prestart_prefect_server() -> Callable[[], None]:
    """Start Prefect's embedded server in a background thread (it takes 8-20 s here), so that
    it starts while the command imports and opens its stores; returns the wait for it (call
    it before the first flow). Nothing to start when ``PREFECT_API_URL`` names a server. A
    failed start is left to the first flow, which starts (and reports) it as usual."""
    if os.environ.get("PREFECT_API_URL"):
        return lambda: None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with contextlib.suppress(Exception):
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    thread.start()
    return thread.join
