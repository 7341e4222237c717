"""`vlmforge ui`: the MLflow UI and the Prefect server over the embedded stores, on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def serve_dashboards(mlflow_port: int, prefect_port: int) -> int:
    import registry

    cfg = registry.current_config()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_UI_ENABLED="true",
               PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(prefect_port))
    procs = [
        subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", cfg.tracking_uri,
                          "--default-artifact-root", str(cfg.artifact_root),
                          "--host", "127.0.0.1", "--port", str(mlflow_port)], env=env),
        subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                          "--port", str(prefect_port)], env=env),
    ]
    print(f"MLflow:  http://127.0.0.1:{mlflow_port}\nPrefect: http://127.0.0.1:{prefect_port}\n"
          "Ctrl-C stops both.", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0
