"""Test-wide environment: an isolated VLMFORGE_HOME and the offline defaults, set
before any heavy import; every server a test starts listens on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile

os.environ["VLMFORGE_HOME"] = tempfile.mkdtemp(prefix="vlmforge-test-home-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
# Prefect logs "Stopping temporary server" at interpreter exit, after pytest closed stdout.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from flows.environment import configure_environment  # noqa: E402

configure_environment()
