"""All MLflow access for vlmforge: tracking, model registry and promotion.

Importing this package is cheap: MLflow is only imported when a function that
needs it is called. Public names are re-exported lazily from the submodules.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# MLflow starts its telemetry client at import time; opt out before it is ever imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_EXPORTS: dict[str, str] = {
    # tracking
    "TrackingConfig": "tracking",
    "configure": "tracking",
    "current_config": "tracking",
    "experiment": "tracking",
    "start_run": "tracking",
    "log_params": "tracking",
    "log_metrics": "tracking",
    "log_dict": "tracking",
    "log_text": "tracking",
    "log_image": "tracking",
    "log_table": "tracking",
    "log_artifact": "tracking",
    "log_dataset_input": "tracking",
    "set_tags": "tracking",
    "get_run": "tracking",
    "run_url": "tracking",
    # model registry
    "register_hf_model": "models",
    "hf_model_dir": "models",
    "find_version": "models",
    "version_info": "models",
    "list_versions": "models",
    "get_alias": "models",
    "set_alias": "models",
    "set_version_tags": "models",
    # promotion
    "GateConfig": "promotion",
    "Decision": "promotion",
    "decide": "promotion",
    "promote": "promotion",
    "record_metrics": "promotion",
    "read_metrics": "promotion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
