"""Start-up check of the stack's secrets: refuse to start while any secret still holds the
example value (infra/compose/env.example, infra/k8s/secrets.example.yaml), any value of the
form `change-me...`, an empty value or a password shorter than MIN_LENGTH.

Each secret comes from the environment (NAME) or from a file (NAME_FILE: a Docker or
Kubernetes secret mount), never from a command line. Runs as the one-shot `secrets-check`
service every compose service waits for, and as the `check-secrets` init container of every
Kubernetes workload (both from the vlmforge-mlflow image):

    python check_secrets.py            # exit 0, or 1 naming every secret that must change

Standard library only: it runs in any Python image.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# every secret of the stack -> the value the example files ship (tests keep them equal)
EXAMPLE_VALUES: dict[str, str] = {
    "POSTGRES_PASSWORD": "change-me-postgres",
    "MINIO_ROOT_PASSWORD": "change-me-minio-at-least-8",
    "MLFLOW_ADMIN_PASSWORD": "change-me-mlflow",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "change-me-random-hex",
    "PREFECT_AUTH_STRING": "admin:change-me-prefect",
}
MIN_LENGTH = 12  # characters of a password or key (the Prefect auth string: of its password)


def secret_value(name: str, env: Mapping[str, str]) -> str | None:
    """NAME from the environment, else the content of the file NAME_FILE names (one trailing
    newline dropped), else None."""
    if name in env:
        return env[name]
    path = env.get(f"{name}_FILE")
    if path:
        text = Path(path).read_text()
        return text[:-1] if text.endswith("\n") else text
    return None


def problems(env: Mapping[str, str], names: list[str] | None = None) -> list[str]:
    """Why each of ``names`` (default: every secret) must change before the stack starts."""
    out = []
    for name in names or list(EXAMPLE_VALUES):
        try:
            value = secret_value(name, env)
        except OSError as exc:
            out.append(f"{name}: cannot read {env.get(f'{name}_FILE')!r} ({exc.strerror or exc})")
            continue
        if value is None or not value.strip():
            out.append(f"{name}: not set (set {name} or {name}_FILE)")
        elif value == EXAMPLE_VALUES[name]:
            out.append(f"{name}: still the example value from env.example / secrets.example.yaml")
        elif "change-me" in value:
            out.append(f"{name}: still a 'change-me' placeholder")
        elif len(_password_part(name, value)) < MIN_LENGTH:
            out.append(f"{name}: shorter than {MIN_LENGTH} characters")
    return out


def _password_part(name: str, value: str) -> str:
    """The secret part of a value (`user:password` for the Prefect auth string)."""
    if name == "PREFECT_AUTH_STRING":
        user, sep, password = value.partition(":")
        return password if sep and user else ""
    return value


def main(env: Mapping[str, str] | None = None) -> int:
    found = problems(os.environ if env is None else env)
    if found:
        print("refusing to start: change these secrets first (infra/README.md):\n"
              + "\n".join(f"  - {p}" for p in found), file=sys.stderr, flush=True)
        return 1
    print("secrets check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
